package tracing

import (
	"go/build"
	"strings"
	"testing"
)

// TestImportRules: tracing imports only correlate of ours (design.md §3); jaegertest imports nothing of ours.
func TestImportRules(t *testing.T) {
	const mod = "github.com/amqptrace/amqptrace/"
	for dir, allowed := range map[string][]string{
		".":          {mod + "correlate"},
		"jaegertest": nil,
	} {
		pkg, err := build.ImportDir(dir, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range pkg.Imports {
			if !strings.HasPrefix(imp, mod) {
				continue
			}
			ok := false
			for _, a := range allowed {
				ok = ok || imp == a
			}
			if !ok {
				t.Errorf("%s imports %s", dir, imp)
			}
		}
	}
}
