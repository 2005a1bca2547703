package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// The RPC workload speaks oslo.messaging's wire format (see /work/shared/docs/oslo-wire-format.md §4): the body is
// {"oslo.version": "2.0", "oslo.message": "<inner JSON as a string>"}, written with Python's json.dumps separators
// (", " and ": ") and in oslo's key order, so that amqptrace does the same decoding work as on real traffic.

// field is one key of a JSON object written in a fixed order.
type field struct {
	key string
	val any
}

// orderedJSON writes {"k": v, ...} in the given order with Python's default separators.
func orderedJSON(fields []field) ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, f := range fields {
		if i > 0 {
			b.WriteString(", ")
		}
		k, err := json.Marshal(f.key)
		if err != nil {
			return nil, err
		}
		v, err := json.Marshal(f.val)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f.key, err)
		}
		b.Write(k)
		b.WriteString(": ")
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// osloEnvelope wraps an inner message: the inner JSON becomes a JSON string (the double encoding).
func osloEnvelope(inner []byte) ([]byte, error) {
	return orderedJSON([]field{{"oslo.version", "2.0"}, {"oslo.message", string(inner)}})
}

// osloCall builds the body of an RPC call, as rpc/client.py and amqpdriver._send would.
func osloCall(method string, args map[string]any, msgID, replyQ, requestID string) ([]byte, error) {
	inner, err := orderedJSON([]field{
		{"method", method},
		{"args", args},
		{"version", "1.0"},
		{"_msg_id", msgID},
		{"_reply_q", replyQ},
		{"_timeout", nil},
		{"_unique_id", randHex(16)},
		{"_context_user", "0123456789abcdef0123456789abcdef"},
		{"_context_project_id", "fedcba9876543210fedcba9876543210"},
		{"_context_is_admin", false},
		{"_context_read_only", false},
		// A made-up value in the place of a Keystone token: it makes amqptrace's redaction run as it would on real
		// traffic. It is not a secret and the bench never prints bodies.
		{"_context_auth_token", "bench-fake-token-not-a-secret"},
		{"_context_request_id", requestID},
		{"_context_global_request_id", nil},
		{"_context_roles", []string{"member", "reader"}},
		{"_context_user_name", "bench"},
		{"_context_project_name", "bench"},
	})
	if err != nil {
		return nil, err
	}
	return osloEnvelope(inner)
}

// osloReply builds the final reply to a call (amqpdriver.AMQPIncomingMessage._send_reply).
func osloReply(result any, msgID string) ([]byte, error) {
	inner, err := orderedJSON([]field{
		{"result", result},
		{"failure", nil},
		{"ending", true},
		{"_msg_id", msgID},
		{"_unique_id", randHex(16)},
	})
	if err != nil {
		return nil, err
	}
	return osloEnvelope(inner)
}

// osloMessage is the part of an inner message that the bench's servers and callers read.
type osloMessage struct {
	Method string          `json:"method"`
	Args   json.RawMessage `json:"args"`
	MsgID  string          `json:"_msg_id"`
	ReplyQ string          `json:"_reply_q"`
	Ending bool            `json:"ending"`
}

// parseOslo decodes the envelope and then the inner message.
func parseOslo(body []byte) (osloMessage, error) {
	var env struct {
		Version string  `json:"oslo.version"`
		Message *string `json:"oslo.message"`
	}
	var m osloMessage
	if err := json.Unmarshal(body, &env); err != nil {
		return m, fmt.Errorf("envelope: %w", err)
	}
	if env.Version != "2.0" || env.Message == nil {
		return m, errors.New("envelope: not an oslo.messaging 2.0 envelope")
	}
	if err := json.Unmarshal([]byte(*env.Message), &m); err != nil {
		return m, fmt.Errorf("inner message: %w", err)
	}
	return m, nil
}

// requestID returns an OpenStack request id, req-<uuid4>.
func requestID() string {
	h := []byte(randHex(16))
	h[12] = '4' // version nibble of a uuid4
	return fmt.Sprintf("req-%s-%s-%s-%s-%s", h[0:8], h[8:12], h[12:16], h[16:20], h[20:32])
}
