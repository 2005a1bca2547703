package main

import (
	"fmt"
	"strconv"
	"strings"
)

// observation is what amqptrace says it observed and lost, summed over the rounds it ran. A proxy that keeps its
// speed by dropping what it should observe would look fast in the table, so the report shows this beside it.
type observation struct {
	Runs            int    `json:"runs"`              // amqptrace processes that logged their totals
	Missing         int    `json:"missing,omitempty"` // amqptrace processes that did not (killed, crashed)
	Messages        uint64 `json:"messages"`          // messages handed to the correlator
	MessagesDropped uint64 `json:"messages_dropped"`  // messages dropped because the correlator queue was full
	Records         uint64 `json:"records"`           // records the correlator emitted
	RecordsDropped  uint64 `json:"records_dropped"`   // records a sink queue dropped
	DecodeOff       uint64 `json:"decode_off"`        // connections whose decoding was switched off
}

// stopLineFields are the counters read from amqptrace's last log line ("pipeline stopped").
var stopLineFields = [...]string{"messages", "messages_dropped", "records", "records_dropped", "decode_off"}

// parseStopLine finds the "pipeline stopped" line in amqptrace's output (slog text format) and returns its
// counters. ok is false when the line, or any counter in it, is missing.
func parseStopLine(out string) (o observation, ok bool) {
	vals, ok := logCounters(out, "pipeline stopped", stopLineFields[:])
	if !ok {
		return o, false
	}
	return observation{Runs: 1, Messages: vals["messages"], MessagesDropped: vals["messages_dropped"],
		Records: vals["records"], RecordsDropped: vals["records_dropped"], DecodeOff: vals["decode_off"]}, true
}

// logCounters finds the last line of out (slog text format) whose message is msg and returns its numeric fields.
// ok is false when there is no such line or one of need is missing from it.
func logCounters(out, msg string, need []string) (map[string]uint64, bool) {
	var line string
	for l := range strings.Lines(out) {
		if strings.Contains(l, "msg="+strconv.Quote(msg)) {
			line = l
		}
	}
	if line == "" {
		return nil, false
	}
	vals := map[string]uint64{}
	for _, f := range strings.Fields(line) {
		if k, v, found := strings.Cut(f, "="); found {
			if n, err := strconv.ParseUint(v, 10, 64); err == nil {
				vals[k] = n
			}
		}
	}
	for _, k := range need {
		if _, found := vals[k]; !found {
			return nil, false
		}
	}
	return vals, true
}

func (o *observation) add(x observation) {
	o.Runs += x.Runs
	o.Missing += x.Missing
	o.Messages += x.Messages
	o.MessagesDropped += x.MessagesDropped
	o.Records += x.Records
	o.RecordsDropped += x.RecordsDropped
	o.DecodeOff += x.DecodeOff
}

func (o *observation) String() string {
	s := fmt.Sprintf("%d messages observed, %d dropped; %d records emitted, %d dropped; decoding switched off on %d connections (%d amqptrace runs)",
		o.Messages, o.MessagesDropped, o.Records, o.RecordsDropped, o.DecodeOff, o.Runs)
	if o.Missing > 0 {
		s += fmt.Sprintf("; %d runs did not log their totals", o.Missing)
	}
	return s
}
