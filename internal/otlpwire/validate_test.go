package otlpwire

import (
	"bytes"
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// TestPlainKeyValueAgrees checks the layout-specific reading of a KeyValue
// against the field-by-field one over random encodings, damaged ones too:
// whenever plainKeyValue answers, keyValue must accept the same bytes and
// scalar must read the same value from them, and every attribute as
// encoders write it must take the fast path.
func TestPlainKeyValueAgrees(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	strs := []string{"", "k", "http.method", "GET", "\xff\xfe", "a\xc3", "é☃", string(bytes.Repeat([]byte("x"), 300))}
	str := func() string { return strs[rng.IntN(len(strs))] }
	value := func() *commonpb.AnyValue {
		switch rng.IntN(8) {
		case 0:
			return &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: str()}}
		case 1:
			return &commonpb.AnyValue{Value: &commonpb.AnyValue_BoolValue{BoolValue: rng.IntN(2) == 1}}
		case 2:
			return &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: rng.Int64() >> rng.IntN(64)}}
		case 3:
			return &commonpb.AnyValue{Value: &commonpb.AnyValue_DoubleValue{DoubleValue: math.Float64frombits(rng.Uint64())}}
		case 4:
			return &commonpb.AnyValue{Value: &commonpb.AnyValue_BytesValue{BytesValue: []byte(str())}}
		case 5:
			return &commonpb.AnyValue{Value: &commonpb.AnyValue_ArrayValue{ArrayValue: &commonpb.ArrayValue{
				Values: []*commonpb.AnyValue{{Value: &commonpb.AnyValue_StringValue{StringValue: str()}}}}}}
		case 6:
			return &commonpb.AnyValue{}
		}
		return nil
	}
	fast := 0
	for i := range 200000 {
		kv := &commonpb.KeyValue{Key: str(), Value: value()}
		enc, err := proto.MarshalOptions{Deterministic: true}.Marshal(kv)
		if err != nil {
			enc = protowire.AppendTag(nil, 1, protowire.BytesType) // strings proto refuses
			enc = protowire.AppendString(enc, kv.Key)
			if kv.Value != nil {
				v, _ := proto.Marshal(kv.Value) // invalid UTF-8 goes through unchecked below
				if v == nil {
					v = appendRawString(kv.Value)
				}
				enc = protowire.AppendTag(enc, 2, protowire.BytesType)
				enc = protowire.AppendBytes(enc, v)
			}
		}
		canonical := bytes.Clone(enc)
		switch rng.IntN(4) {
		case 1: // a byte changed
			if len(enc) > 0 {
				enc[rng.IntN(len(enc))] = byte(rng.Uint32())
			}
		case 2: // cut short
			enc = enc[:rng.IntN(len(enc)+1)]
		case 3: // a field appended
			enc = protowire.AppendTag(enc, protowire.Number(1+rng.IntN(3)), protowire.Type(rng.IntN(6)))
			enc = append(enc, byte(rng.Uint32()), byte(rng.Uint32()))
		}
		key, typ, b, num, ok := plainKeyValue(enc)
		wantKey, val, err := keyValue(protowire.BytesType, enc, 0)
		if ok {
			fast++
			wt, wb, wnum, wok := scalar(val)
			if err != nil || !wok || !bytes.Equal(key, wantKey) || typ != wt || !bytes.Equal(b, wb) || num != wnum {
				t.Fatalf("case %d %x: plainKeyValue %q %d %q %d; keyValue %q %v, scalar %d %q %d %v",
					i, enc, key, typ, b, num, wantKey, err, wt, wb, wnum, wok)
			}
			continue
		}
		// Attributes as encoders write them, with a valid scalar value,
		// must not fall back to the slow path.
		if bytes.Equal(enc, canonical) && err == nil {
			if _, _, _, ok := scalar(val); ok && kv.Value != nil && kv.Key != "" {
				t.Fatalf("case %d %x: a plain attribute took the slow path", i, enc)
			}
		}
	}
	if fast < 10000 {
		t.Fatalf("only %d of the cases took the fast path", fast)
	}
}

// appendRawString encodes a string AnyValue whose string is not valid
// UTF-8, which proto.Marshal refuses.
func appendRawString(v *commonpb.AnyValue) []byte {
	enc := protowire.AppendTag(nil, 1, protowire.BytesType)
	return protowire.AppendString(enc, v.GetStringValue())
}

// TestPlainKeyValueRejectsBadUTF8 checks that invalid UTF-8 in a key or a
// string value reaches the field-by-field path, whose error names it.
func TestPlainKeyValueRejectsBadUTF8(t *testing.T) {
	for _, c := range []struct{ key, val string }{{"\xff", "ok"}, {"ok", "\xff"}} {
		enc := protowire.AppendTag(nil, 1, protowire.BytesType)
		enc = protowire.AppendString(enc, c.key)
		enc = protowire.AppendTag(enc, 2, protowire.BytesType)
		enc = protowire.AppendBytes(enc, appendRawString(&commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: c.val}}))
		if _, _, _, _, ok := plainKeyValue(enc); ok {
			t.Fatalf("%q=%q: read as plain", c.key, c.val)
		}
		var bad *utf8Error
		if err := validateKeyValue(protowire.BytesType, enc, 0); !errors.As(err, &bad) {
			t.Fatalf("%q=%q: %v, want a UTF-8 error", c.key, c.val, err)
		}
	}
}
