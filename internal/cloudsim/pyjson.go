package cloudsim

import "strconv"

// member is one key of an ordered JSON object. oslo.messaging builds its messages as Python dicts, whose key order
// is insertion order, and serialises them with json.dumps; a Go map would lose that order, so messages are built
// as ordered member lists instead.
type member struct {
	k string
	v any
}

// object is an ordered JSON object.
type object []member

// pyDumps encodes v the way Python's json.dumps does with its defaults, which is what oslo's jsonutils.dumps and
// kombu's JSON serializer produce: separators ", " and ": ", ensure_ascii (every non-ASCII rune as \uXXXX, astral
// runes as a surrogate pair), no HTML escaping (unlike encoding/json), floats in repr form ("1.0", not "1").
//
// Supported values: nil, bool, int, int64, float64, string, object, []any, []string, []object, [][]object.
// Anything else is a programming error and panics, so a new type cannot silently go out malformed.
func pyDumps(v any) string {
	return string(appendPy(nil, v))
}

func appendPy(b []byte, v any) []byte {
	switch x := v.(type) {
	case nil:
		return append(b, "null"...)
	case bool:
		if x {
			return append(b, "true"...)
		}
		return append(b, "false"...)
	case int:
		return strconv.AppendInt(b, int64(x), 10)
	case int64:
		return strconv.AppendInt(b, x, 10)
	case float64:
		s := strconv.FormatFloat(x, 'f', -1, 64)
		b = append(b, s...)
		for i := 0; i < len(s); i++ {
			if s[i] == '.' {
				return b
			}
		}
		return append(b, ".0"...)
	case string:
		return appendPyString(b, x)
	case object:
		b = append(b, '{')
		for i, m := range x {
			if i > 0 {
				b = append(b, ", "...)
			}
			b = appendPyString(b, m.k)
			b = append(b, ": "...)
			b = appendPy(b, m.v)
		}
		return append(b, '}')
	case []any:
		return appendPyList(b, x, appendPy)
	case []string:
		return appendPyList(b, x, appendPyString)
	case []object:
		return appendPyList(b, x, func(b []byte, o object) []byte { return appendPy(b, o) })
	case [][]object:
		return appendPyList(b, x, func(b []byte, l []object) []byte { return appendPy(b, l) })
	default:
		panic("cloudsim: pyDumps: unsupported type")
	}
}

// appendPyList writes a JSON array with Python's ", " separator, each element by appendElem.
func appendPyList[T any](b []byte, xs []T, appendElem func([]byte, T) []byte) []byte {
	b = append(b, '[')
	for i, e := range xs {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = appendElem(b, e)
	}
	return append(b, ']')
}

const hexDigits = "0123456789abcdef"

// appendPyString follows CPython's py_encode_basestring_ascii: the short escapes for " \ \n \r \t \b \f, \u00XX for
// the other control characters, \uXXXX (lower-case hex) for everything above 0x7e.
func appendPyString(b []byte, s string) []byte {
	b = append(b, '"')
	for _, r := range s {
		switch {
		case r == '"':
			b = append(b, '\\', '"')
		case r == '\\':
			b = append(b, '\\', '\\')
		case r == '\n':
			b = append(b, '\\', 'n')
		case r == '\r':
			b = append(b, '\\', 'r')
		case r == '\t':
			b = append(b, '\\', 't')
		case r == '\b':
			b = append(b, '\\', 'b')
		case r == '\f':
			b = append(b, '\\', 'f')
		case r >= 0x20 && r < 0x7f:
			b = append(b, byte(r))
		case r > 0xffff:
			r -= 0x10000
			b = appendU4(b, 0xd800|(r>>10)&0x3ff)
			b = appendU4(b, 0xdc00|r&0x3ff)
		default:
			// utf8.RuneError for invalid bytes is written as \ufffd, as Python would after decoding with
			// errors="replace"; our own strings are valid UTF-8 anyway.
			b = appendU4(b, r)
		}
	}
	return append(b, '"')
}

func appendU4(b []byte, r rune) []byte {
	return append(b, '\\', 'u', hexDigits[r>>12&0xf], hexDigits[r>>8&0xf], hexDigits[r>>4&0xf], hexDigits[r&0xf])
}
