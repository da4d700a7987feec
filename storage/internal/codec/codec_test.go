package codec

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

func TestFragmentRoundTrip(t *testing.T) {
	groups := []Group{
		{Resource: [16]byte{1}, Scope: [16]byte{2}, Spans: [][]byte{[]byte("a"), {}, []byte("ccc")}},
		{Resource: [16]byte{3}, Scope: [16]byte{4}, Spans: [][]byte{[]byte("d")}},
	}
	enc := AppendFragment(nil, groups)
	got, err := DecodeFragment(nil, enc)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, groups) {
		t.Fatalf("got %v, want %v", got, groups)
	}
	for i := range enc {
		if _, err := DecodeFragment(nil, enc[:i]); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("truncated to %d bytes: err = %v", i, err)
		}
	}
}

func TestRecordsRoundTrip(t *testing.T) {
	b := BlockRecord{WALSegment: 9, Spans: 1000, Created: 123}
	if got, err := DecodeBlockRecord(AppendBlockRecord(nil, b)); err != nil || got != b {
		t.Fatalf("block record: %v %v", got, err)
	}
	for _, d := range []Dict{{Raw: nil, SchemaURL: []byte("u")}, {Raw: []byte{}, SchemaURL: nil}, {Raw: []byte("res")}} {
		got, err := DecodeDict(AppendDict(nil, d))
		if err != nil || (got.Raw == nil) != (d.Raw == nil) || !bytes.Equal(got.Raw, d.Raw) || !bytes.Equal(got.SchemaURL, d.SchemaURL) {
			t.Fatalf("dict %+v: got %+v, %v", d, got, err)
		}
	}
}

func FuzzFragment(f *testing.F) {
	f.Add(AppendFragment(nil, []Group{{Spans: [][]byte{[]byte("x")}}}))
	f.Add([]byte{fragmentV1, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		groups, err := DecodeFragment(nil, b)
		if err != nil {
			return
		}
		again, err := DecodeFragment(nil, AppendFragment(nil, groups))
		if err != nil || !reflect.DeepEqual(again, groups) {
			t.Fatalf("re-encoded fragment differs: %v", err)
		}
	})
}

func FuzzRecords(f *testing.F) {
	f.Add(AppendBlockRecord(nil, BlockRecord{1, 2, 3}))
	f.Add(AppendDict(nil, Dict{Raw: []byte("r"), SchemaURL: []byte("s")}))
	f.Fuzz(func(t *testing.T, b []byte) {
		if r, err := DecodeBlockRecord(b); err == nil {
			if again, err := DecodeBlockRecord(AppendBlockRecord(nil, r)); err != nil || again != r {
				t.Fatalf("block record %v does not round-trip", r)
			}
		}
		if d, err := DecodeDict(b); err == nil {
			again, err := DecodeDict(AppendDict(nil, d))
			if err != nil || !bytes.Equal(again.Raw, d.Raw) || (again.Raw == nil) != (d.Raw == nil) || !bytes.Equal(again.SchemaURL, d.SchemaURL) {
				t.Fatalf("dict %v does not round-trip", d)
			}
		}
	})
}
