// Package recorded loads the recorded AMQP connections kept as test data (frames/testdata/<set>/conn-N.c2s.gz and
// conn-N.s2c.gz, written by frames/testdata/record.go), for tests outside package frames.
package recorded

import (
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Conn is one recorded connection: the bytes each way.
type Conn struct {
	Name     string // conn-N
	C2S, S2C []byte
}

// MaxStream bounds what one recorded stream may expand to.
const MaxStream = 64 << 20

// Load reads every connection recorded in dir (e.g. "../frames/testdata/oslo"), in name order.
func Load(dir string) ([]Conn, error) {
	names, err := filepath.Glob(filepath.Join(dir, "conn-*.c2s.gz"))
	if err != nil {
		return nil, err
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("no recorded connections in %s", dir)
	}
	sort.Strings(names)
	var out []Conn
	for _, n := range names {
		base := strings.TrimSuffix(n, ".c2s.gz")
		c := Conn{Name: filepath.Base(base)}
		if c.C2S, err = Gunzip(n); err != nil {
			return nil, err
		}
		if c.S2C, err = Gunzip(base + ".s2c.gz"); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// Gunzip reads a gzip file, up to MaxStream bytes of it expanded.
func Gunzip(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	b, err := io.ReadAll(io.LimitReader(z, MaxStream))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return b, nil
}
