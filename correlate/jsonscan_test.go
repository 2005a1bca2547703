package correlate

import (
	"bytes"
	"testing"
)

// The word-at-a-time search against a byte loop, for every position of a byte that matters in buffers around the
// word size, next to the bytes that break such tricks (0x00, 0x01, the neighbours of the backslash and of 0x20,
// bytes with the top bit set).
func TestWordSearchMatchesByteLoop(t *testing.T) {
	ctlOrBS := func(b []byte, i int) int {
		for ; i < len(b); i++ {
			if b[i] < 0x20 || b[i] == '\\' {
				return i
			}
		}
		return len(b)
	}
	fill := []byte{'a', 0x00, 0x01, 0x1f, 0x20, 0x21, 0x23, 0x5b, 0x5d, 0x7f, 0x80, 0xdc, 0xff}
	special := []byte{'"', '\\', 0x00, 0x01, 0x1f, 0x20, 0x21, 0x5b, 0x80}
	for n := range 80 {
		for _, f := range fill {
			for _, s := range special {
				for at := -1; at < n; at++ {
					b := bytes.Repeat([]byte{f}, n)
					if at >= 0 {
						b[at] = s
					}
					for _, from := range []int{0, 1, 7, 8, 9} {
						if from > n {
							continue
						}
						if got, want := ctlOrBackslash(b, from), ctlOrBS(b, from); got != want {
							t.Fatalf("ctlOrBackslash(%x, %d) = %d, want %d", b, from, got, want)
						}
					}
				}
			}
		}
	}
}

// refScanString is the definition: a quote ends the string unless an odd run of backslashes precedes it.
func refScanString(b []byte, i int) ([]byte, int, bool) {
	if i >= len(b) || b[i] != '"' {
		return nil, i, false
	}
	for q := i + 1; q < len(b); q++ {
		if b[q] != '"' {
			continue
		}
		bs := 0
		for p := q - 1; p > i && b[p] == '\\'; p-- {
			bs++
		}
		if bs%2 == 0 {
			return b[i+1 : q], q + 1, true
		}
	}
	return nil, len(b), false
}

// FuzzStringScan: scanString agrees with its definition, decodeString with scanString + unescapeString, and
// validStringContent with a byte loop, on any input.
func FuzzStringScan(f *testing.F) {
	for _, s := range bodySeeds() {
		f.Add(s)
	}
	f.Add([]byte(`"abc\\\"def\\\\" tail`))
	f.Add([]byte(`"\u00e9\ud83d\ude00\n\t\/"`))
	f.Add([]byte("\"a\x01b\\x\""))
	f.Fuzz(func(t *testing.T, b []byte) {
		raw, end, ok := scanString(b, 0)
		rraw, rend, rok := refScanString(b, 0)
		if ok != rok || end != rend || !bytes.Equal(raw, rraw) {
			t.Fatalf("scanString(%q) = %q, %d, %v; want %q, %d, %v", b, raw, end, ok, rraw, rend, rok)
		}
		dec, dend, dok := decodeString(nil, b, 0)
		if ok {
			want, uok := unescapeString(nil, raw, false)
			if dok != uok || (dok && (dend != end || !bytes.Equal(dec, want))) {
				t.Fatalf("decodeString(%q) = %q, %d, %v; want %q, %d, %v", b, dec, dend, dok, want, end, uok)
			}
		} else if dok {
			t.Fatalf("decodeString(%q) = %q, ok for a string scanString finds unclosed", b, dec)
		}
		valid := true
		for i := 0; i < len(b); i++ {
			if b[i] < 0x20 {
				valid = false
				break
			}
			if b[i] == '\\' {
				if i+1 >= len(b) {
					valid = false
					break
				}
				switch b[i+1] {
				case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
					i++
				case 'u':
					if _, ok := hex4(b[i:]); !ok {
						valid = false
					}
					i += 5
				default:
					valid = false
				}
				if !valid {
					break
				}
			}
		}
		if got := validStringContent(b); got != valid {
			t.Fatalf("validStringContent(%q) = %v, want %v", b, got, valid)
		}
		checkScanCleanString(t, b)
	})
}

// checkScanCleanString: scanCleanString is scanString followed by validStringContent, and its trig says whether
// the content holds a byte between ':' and 'M' or a \u escape.
func checkScanCleanString(t *testing.T, b []byte) {
	t.Helper()
	raw, end, ok := scanString(b, 0)
	ok = ok && validStringContent(raw)
	trig := false
	for i := 0; ok && i < len(raw); i++ {
		if raw[i] >= ':' && raw[i] <= 'M' {
			trig = true
		}
		if raw[i] == '\\' {
			trig = trig || raw[i+1] == 'u'
			i++
		}
	}
	graw, gend, gtrig, gok := scanCleanString(b, 0)
	if gok != ok || ok && (gend != end || !bytes.Equal(graw, raw) || gtrig != trig) {
		t.Fatalf("scanCleanString(%q) = %q, %d, %v, %v; want %q, %d, %v, %v", b, graw, gend, gtrig, gok, raw, end,
			trig, ok)
	}
	if dec, dend, dok := decodeCleanString([]byte("pre"), b, 0); dok != ok || ok && (dend != end ||
		!bytes.Equal(dec, unescapeChecked([]byte("pre"), raw))) {
		t.Fatalf("decodeCleanString(%q) = %q, %d, %v; want the decoded %q, %d, %v", b, dec, dend, dok, raw, end, ok)
	}
	if !ok {
		return
	}
	// What nested does with such a string: decode it, and escape the quotes and backslashes of a text again.
	want, _ := unescapeString([]byte("pre"), raw, false)
	if got := unescapeChecked([]byte("pre"), raw); !bytes.Equal(got, want) {
		t.Fatalf("unescapeChecked(%q) = %q, want %q", raw, got, want)
	}
	var esc []byte
	for _, c := range raw {
		if c == '"' || c == '\\' {
			esc = append(esc, '\\')
		}
		esc = append(esc, c)
	}
	if got := escapeQuotes(nil, raw); !bytes.Equal(got, esc) {
		t.Fatalf("escapeQuotes(%q) = %q, want %q", raw, got, esc)
	}
}

// scanCleanString at every place of every byte that matters to it, in strings around the word size.
func TestScanCleanStringMatchesScanString(t *testing.T) {
	fill := []byte{'a', ' ', '9', 0x00, 0x1f, 0x20, 0x39, 0x3a, 0x4d, 0x4e, 0x5b, 0x5d, 0x7f, 0x80, 0xba, 0xcd, 0xff}
	special := []byte{'"', '\\', 0x00, 0x1f, ':', '=', 'A', 'M', 'N', 0x21, 0x5b, 0x80, 0xba}
	tails := []string{`"`, `" x`, `\"x"`, `\u00e9"`, `\u0041"`, `\\"`, `\q"`, `\u12"`, ``, `\`, `\/\n\"\\"`,
		`\ud83d\ude00"`, `\ud83dx"`}
	for n := range 40 {
		for _, f := range fill {
			for _, s := range special {
				for at := -1; at < n; at++ {
					for _, tail := range tails {
						b := append([]byte{'"'}, bytes.Repeat([]byte{f}, n)...)
						if at >= 0 {
							b[1+at] = s
						}
						checkScanCleanString(t, append(b, tail...))
					}
				}
			}
		}
	}
}
