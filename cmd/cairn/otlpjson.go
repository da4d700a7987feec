package main

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/encoding/protojson"
)

// writeOTLPJSON prints the OTLP/JSON encoding of td: protojson with
// lowerCamelCase names and enums as integers, except that trace and span IDs
// are hex strings, as the OTLP specification requires, not base64.
func writeOTLPJSON(w io.Writer, td *tracepb.TracesData) error {
	b, err := protojson.MarshalOptions{UseEnumNumbers: true}.Marshal(td)
	if err != nil {
		return fmt.Errorf("encode OTLP JSON: %w", err)
	}
	b, err = hexIDs(b)
	if err != nil {
		return err
	}
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		return fmt.Errorf("indent OTLP JSON: %w", err)
	}
	out.WriteByte('\n')
	_, err = out.WriteTo(w)
	return err
}

// idFields are the OTLP fields that JSON carries as hex, not base64.
var idFields = map[string]bool{"traceId": true, "spanId": true, "parentSpanId": true}

// hexIDs re-encodes the ID fields of a protojson document from base64 to hex,
// keeping every other token, and their order, as they are.
func hexIDs(doc []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	var out bytes.Buffer
	type frame struct {
		object  bool
		n       int  // members or elements written
		wantKey bool // in an object, the next string is a key
	}
	var stack []frame
	lastKey := ""
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return out.Bytes(), nil
		}
		if err != nil {
			return nil, fmt.Errorf("re-encode OTLP JSON: %w", err)
		}
		top := len(stack) - 1
		isKey := top >= 0 && stack[top].object && stack[top].wantKey
		if d, ok := tok.(json.Delim); ok && (d == '}' || d == ']') {
			out.WriteRune(rune(d))
			stack = stack[:top]
			if top > 0 && stack[top-1].object {
				stack[top-1].wantKey = true
			}
			continue
		}
		if top >= 0 {
			switch {
			case isKey && stack[top].n > 0:
				out.WriteByte(',')
			case !stack[top].object && stack[top].n > 0:
				out.WriteByte(',')
			case stack[top].object && !isKey:
				out.WriteByte(':')
			}
		}
		switch t := tok.(type) {
		case json.Delim:
			out.WriteRune(rune(t))
			if top >= 0 {
				stack[top].n++
			}
			stack = append(stack, frame{object: t == '{', wantKey: t == '{'})
			continue
		case string:
			if !isKey && idFields[lastKey] {
				if raw, err := base64.StdEncoding.DecodeString(t); err == nil {
					t = hex.EncodeToString(raw)
				}
			}
			v, _ := json.Marshal(t)
			out.Write(v)
			if isKey {
				lastKey = t
			}
		default:
			v, err := json.Marshal(t)
			if err != nil {
				return nil, err
			}
			out.Write(v)
		}
		if top >= 0 {
			if stack[top].object {
				if isKey {
					stack[top].wantKey = false
				} else {
					stack[top].wantKey = true
					stack[top].n++
				}
			} else {
				stack[top].n++
			}
		}
	}
}
