//go:build ignore

// record captures real AMQP traffic for the frames tests: it runs a recording TCP relay in front of RabbitMQ,
// drives real clients through it, and writes each connection's two byte streams, gzip-compressed, to
// <out>/conn-<n>.c2s.gz (client → broker) and <out>/conn-<n>.s2c.gz (broker → client).
//
//	go run ./frames/testdata/record.go -mode amqp091 -out frames/testdata/amqp091
//	go run ./frames/testdata/record.go -mode oslo -out frames/testdata/oslo
//
// amqp091: one amqp091-go connection; channel 1 publishes 10 small messages with publisher confirms, channel 3
// publishes one 8 MiB message at the same time (so channels interleave), channel 2 consumes all 11 and acks them.
// oslo: /usr/bin/python3 oslo_capture.py (a call, a cast, a fanout cast and a notification). The password is the
// test broker's guest/guest; the tests assert the decoder never exposes it.
package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

func main() {
	mode := flag.String("mode", "amqp091", "amqp091 or oslo")
	out := flag.String("out", "", "output directory")
	broker := flag.String("broker", "127.0.0.1:5672", "RabbitMQ address")
	flag.Parse()
	if *out == "" {
		log.Fatal("-out is required")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	r := &relay{broker: *broker}
	go r.serve(ln)
	url := fmt.Sprintf("amqp://guest:guest@%s/", ln.Addr())
	suffix := fmt.Sprintf("%d", os.Getpid())
	switch *mode {
	case "amqp091":
		err = runAMQP091(url, suffix)
	case "oslo":
		cmd := exec.Command("/usr/bin/python3", "oslo_capture.py", "rabbit://guest:guest@"+ln.Addr().String()+"/",
			"frames_capture_"+suffix)
		// Run from the repository root or from frames/testdata.
		if _, e := os.Stat("oslo_capture.py"); e == nil {
			cmd.Dir = "."
		} else {
			cmd.Dir = "frames/testdata"
		}
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		err = cmd.Run()
	default:
		err = fmt.Errorf("unknown mode %q", *mode)
	}
	if err != nil {
		log.Fatal(err)
	}
	ln.Close()
	r.wg.Wait()
	if err := r.save(*out); err != nil {
		log.Fatal(err)
	}
}

type capture struct{ c2s, s2c bytes.Buffer }

type relay struct {
	broker string
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  []*capture
}

func (r *relay) serve(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", r.broker)
		if err != nil {
			log.Print(err)
			c.Close()
			continue
		}
		cp := &capture{}
		r.mu.Lock()
		r.conns = append(r.conns, cp)
		r.mu.Unlock()
		r.wg.Add(2)
		go r.pump(up, c, &cp.c2s)
		go r.pump(c, up, &cp.s2c)
	}
}

// pump copies src to dst and records what it forwarded; at EOF it half-closes dst so the peer sees the close.
func (r *relay) pump(dst, src net.Conn, rec *bytes.Buffer) {
	defer r.wg.Done()
	_, _ = io.Copy(io.MultiWriter(dst, rec), src)
	if tc, ok := dst.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
}

func (r *relay) save(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for i, c := range r.conns {
		for _, f := range []struct {
			ext string
			b   *bytes.Buffer
		}{{"c2s", &c.c2s}, {"s2c", &c.s2c}} {
			var z bytes.Buffer
			w, _ := gzip.NewWriterLevel(&z, gzip.BestCompression)
			w.Write(f.b.Bytes())
			w.Close()
			name := filepath.Join(dir, fmt.Sprintf("conn-%d.%s.gz", i, f.ext))
			if err := os.WriteFile(name, z.Bytes(), 0o644); err != nil {
				return err
			}
			log.Printf("%s: %d bytes (%d compressed)", name, f.b.Len(), z.Len())
		}
	}
	return nil
}

func runAMQP091(url, suffix string) error {
	conn, err := amqp.DialConfig(url, amqp.Config{Properties: amqp.Table{"connection_name": "frames-capture"}})
	if err != nil {
		return err
	}
	defer conn.Close()
	chs := make([]*amqp.Channel, 3)
	for i := range chs {
		if chs[i], err = conn.Channel(); err != nil {
			return err
		}
	}
	pub, cons, big := chs[0], chs[1], chs[2]
	q := "frames-capture-" + suffix
	if _, err := cons.QueueDeclare(q, false, true, false, false, amqp.Table{"x-expires": int32(60000)}); err != nil {
		return err
	}
	if err := pub.Confirm(false); err != nil {
		return err
	}
	confirms := pub.NotifyPublish(make(chan amqp.Confirmation, 16))
	deliveries, err := cons.Consume(q, "frames-capture-consumer", false, false, false, false, nil)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const small = 10
	body8M := bytes.Repeat([]byte("0123456789abcdef"), 8<<20/16)
	errc := make(chan error, 1)
	go func() {
		errc <- big.PublishWithContext(ctx, "", q, false, false, amqp.Publishing{ContentType: "application/octet-stream",
			MessageId: "big", Body: body8M})
	}()
	for i := 0; i < small; i++ {
		err := pub.PublishWithContext(ctx, "", q, false, false, amqp.Publishing{ContentType: "text/plain",
			CorrelationId: fmt.Sprintf("c-%d", i), ReplyTo: "nowhere", Headers: amqp.Table{"n": int32(i)},
			Timestamp: time.Unix(1700000000, 0), Body: []byte(fmt.Sprintf("message %d", i))})
		if err != nil {
			return err
		}
	}
	if err := <-errc; err != nil {
		return err
	}
	for i := 0; i < small; i++ {
		select {
		case c := <-confirms:
			if !c.Ack {
				return fmt.Errorf("nack for %d", c.DeliveryTag)
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	for i := 0; i < small+1; i++ {
		select {
		case d := <-deliveries:
			if err := d.Ack(false); err != nil {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err := cons.Cancel("frames-capture-consumer", false); err != nil {
		return err
	}
	return conn.Close()
}
