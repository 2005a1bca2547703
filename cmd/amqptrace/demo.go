package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"time"

	"github.com/amqptrace/amqptrace/internal/cloudsim"
)

// runDemo runs the proxy and the UI in front of the local broker and an embedded simulated OpenStack cloud that
// talks oslo.messaging's wire format through the proxy: what a new user sees with `make demo`.
func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("amqptrace demo", flag.ContinueOnError)
	var o options
	o.register(fs, "127.0.0.1:5673", "127.0.0.1:8080")
	rate := fs.Float64("rate", 1, "instance boots per second in the simulated cloud (everything else scales with it)")
	computes := fs.Int("computes", 3, "simulated nova-compute hosts")
	agents := fs.Int("agents", 3, "simulated neutron-openvswitch-agent hosts")
	brokerUser := fs.String("broker-user", "guest", "RabbitMQ user the simulated services log in with")
	brokerPass := fs.String("broker-password", "guest", "RabbitMQ password of --broker-user (never logged)")
	brokerVhost := fs.String("broker-vhost", "/", "RabbitMQ virtual host of the simulated cloud (it must exist: rabbitmqctl add_vhost NAME); keeps two demos on one broker apart")
	boots := fs.Int("boots", 0, "stop after this many instance boots and exit 0 (0: run until Ctrl-C)")
	if err := parseFlags(fs, args, "amqptrace demo: the proxy and the UI in front of the local RabbitMQ, with a simulated OpenStack cloud talking through it.", stdout); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return badUsage(err)
	}
	if err := o.check(); err != nil {
		return err
	}
	if *rate <= 0 {
		return badUsagef("--rate must be positive")
	}
	if *boots < 0 {
		return badUsagef("--boots must not be negative")
	}
	logger, err := newLogger(o.logFormat, o.logLevel, stderr)
	if err != nil {
		return badUsage(err)
	}
	a, err := newApp(ctx, &o, logger, stdout)
	if err != nil {
		return err
	}
	return a.run(ctx, func(ctx context.Context, proxyAddr string) error {
		// The vhost is the URL path, escaped: the default vhost "/" is "/%2F".
		u := url.URL{Scheme: "amqp", User: url.UserPassword(*brokerUser, *brokerPass), Host: proxyAddr,
			Path: "/" + *brokerVhost, RawPath: "/" + url.PathEscape(*brokerVhost)}
		cloud := cloudsim.New(cloudsim.Config{
			URL:      u.String(),
			Rate:     *rate,
			Computes: *computes,
			Agents:   *agents,
			MaxBoots: *boots,
			Seed:     time.Now().UnixNano(),
			Logger:   logger, // cloudsim adds component=cloudsim itself
		})
		done := make(chan error, 1)
		go func() { done <- cloud.Run(ctx) }()
		select {
		case <-cloud.Ready():
			if a.httpLn != nil {
				fmt.Fprintf(stdout, "\namqptrace demo is running: open http://%s/ in a browser (Ctrl-C stops it).\n"+
					"The simulated cloud talks to RabbitMQ through the proxy at %s.\n\n", a.httpLn.Addr(), proxyAddr)
			}
		case err := <-done:
			return fmt.Errorf("simulated cloud: %w (is RabbitMQ running? `scripts/ensure-rabbitmq.sh` starts it)", err)
		}
		err := <-done
		if err != nil && ctx.Err() == nil {
			return fmt.Errorf("simulated cloud: %w", err)
		}
		if *boots > 0 && ctx.Err() == nil {
			c := cloud.Counts()
			logger.Info("simulated cloud finished", "boots", c.Boots)
		}
		return nil
	})
}
