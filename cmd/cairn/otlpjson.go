package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"cairn/internal/otlpjson"
)

// writeOTLPJSON prints td in the OTLP/JSON encoding, indented.
func writeOTLPJSON(w io.Writer, td *tracepb.TracesData) error {
	b, err := otlpjson.Marshal(td)
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
