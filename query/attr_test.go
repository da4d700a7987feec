package query

import (
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"cairn/query/jaegerpb"
)

// TestParseAttributeTypes checks how a condition's value is typed: numbers
// only as JSON writes them, so that a string that Go would read as a number
// is still searched for as the string it is.
func TestParseAttributeTypes(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{`k=404`, `{"key":"k","value":{"intValue":"404"}}`},
		{`k=-3`, `{"key":"k","value":{"intValue":"-3"}}`},
		{`k=72.50`, `{"key":"k","value":{"doubleValue":72.5}}`},
		{`k=1e6`, `{"key":"k","value":{"doubleValue":1000000}}`},
		{`k=-0.5E-2`, `{"key":"k","value":{"doubleValue":-0.005}}`},
		{`k=99999999999999999999`, `{"key":"k","value":{"stringValue":"99999999999999999999"}}`},
		{`k=1e400`, `{"key":"k","value":{"stringValue":"1e400"}}`},
		{`k=true`, `{"key":"k","value":{"boolValue":true}}`},
		{`k="404"`, `{"key":"k","value":{"stringValue":"404"}}`},
		{`k=a=b`, `{"key":"k","value":{"stringValue":"a=b"}}`},
		{`k=`, `{"key":"k","value":{"stringValue":""}}`},
		// Go's parsers read these as numbers; JSON does not.
		{`k=Nan`, `{"key":"k","value":{"stringValue":"Nan"}}`},
		{`k=INF`, `{"key":"k","value":{"stringValue":"INF"}}`},
		{`k=1_000`, `{"key":"k","value":{"stringValue":"1_000"}}`},
		{`k=0x1p3`, `{"key":"k","value":{"stringValue":"0x1p3"}}`},
		{`k=01234`, `{"key":"k","value":{"stringValue":"01234"}}`},
		{`k=+5`, `{"key":"k","value":{"stringValue":"+5"}}`},
		{`k=1.`, `{"key":"k","value":{"stringValue":"1."}}`},
		{`k=.5`, `{"key":"k","value":{"stringValue":".5"}}`},
		{`k=1e`, `{"key":"k","value":{"stringValue":"1e"}}`},
		{`k=-`, `{"key":"k","value":{"stringValue":"-"}}`},
		{`k=True`, `{"key":"k","value":{"stringValue":"True"}}`},
	} {
		got, err := ParseAttribute(c.in)
		if err != nil {
			t.Fatalf("%s: %v", c.in, err)
		}
		want := &jaegerpb.KeyValue{}
		if err := protojson.Unmarshal([]byte(c.want), want); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(got, want) {
			t.Errorf("%s: %v, want %s", c.in, got, c.want)
		}
	}
	for _, in := range []string{"novalue", "=v"} {
		if _, err := ParseAttribute(in); err == nil {
			t.Errorf("%s: parsed", in)
		}
	}
}
