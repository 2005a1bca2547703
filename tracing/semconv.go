package tracing

// The semantic-conventions release our attribute names follow. It ships inside go.opentelemetry.io/otel (no module
// of its own), so moving to a newer release is a one-line change here, checked by TestSemconvNames.
import semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

// semconvSchemaURL is the pinned release's schema URL, set on every resource so a backend can translate names.
const semconvSchemaURL = semconv.SchemaURL
