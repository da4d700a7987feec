package query

import (
	"slices"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// TruncatedKey is the attribute cairn adds to a span, resource or scope
// whose attribute values it cut to fit a response message. Its int value is
// the number of bytes removed.
const TruncatedKey = "cairn.truncated"

// shape describes where attribute values sit in an encoded OTLP message: the
// fields that are messages to descend into, and those that are string or
// bytes values that may be cut.
type shape struct {
	children map[protowire.Number]*shape
	values   map[protowire.Number]bool // string or bytes values
	strings  map[protowire.Number]bool // string fields, cut at a character boundary
	attrs    protowire.Number          // the attributes field, where the marker goes
	// keep lists, for messages that do not fit even with every value cut to
	// nothing, the length-delimited fields kept, with the length each is
	// cut to; fields of other wire types are always kept.
	keep map[protowire.Number]int
}

var anyValue, arrayValue, kvList, keyValue, event, link, spanShape, resourceShape, scopeShape shape

func init() {
	// AnyValue: string_value 1, array_value 5, kvlist_value 6, bytes_value 7.
	anyValue = shape{
		children: map[protowire.Number]*shape{5: &arrayValue, 6: &kvList},
		values:   map[protowire.Number]bool{1: true, 7: true},
		strings:  map[protowire.Number]bool{1: true},
	}
	arrayValue = shape{children: map[protowire.Number]*shape{1: &anyValue}}
	kvList = shape{children: map[protowire.Number]*shape{1: &keyValue}}
	keyValue = shape{children: map[protowire.Number]*shape{2: &anyValue}}
	event = shape{children: map[protowire.Number]*shape{3: &keyValue}}
	link = shape{children: map[protowire.Number]*shape{4: &keyValue}}
	// Span: trace_id 1, span_id 2, parent_span_id 4, name 5, attributes 9,
	// events 11, links 13.
	spanShape = shape{
		children: map[protowire.Number]*shape{9: &keyValue, 11: &event, 13: &link},
		strings:  map[protowire.Number]bool{5: true},
		attrs:    9,
		keep:     map[protowire.Number]int{1: 16, 2: 8, 4: 8, 5: 256},
	}
	resourceShape = shape{children: map[protowire.Number]*shape{1: &keyValue}, attrs: 1}
	// InstrumentationScope: name 1, version 2, attributes 3.
	scopeShape = shape{
		children: map[protowire.Number]*shape{3: &keyValue},
		strings:  map[protowire.Number]bool{1: true, 2: true},
		attrs:    3,
		keep:     map[protowire.Number]int{1: 256, 2: 256},
	}
}

// markerMax bounds the size of the encoded cairn.truncated attribute: tag,
// length, key, and an AnyValue holding a 10-byte varint.
const markerMax = 2 + 2 + len(TruncatedKey) + 2 + 1 + 10

// fit returns msg, an encoded message of shape sh, cut to at most budget
// bytes if it is longer: its longest string and bytes attribute values, at
// any depth, are cut to a common length, the shortest cut that fits (strings
// at a character boundary), and a cairn.truncated attribute records the
// bytes removed. If cutting every value to nothing would not do, only the
// fields in sh.keep are kept, cut short. It returns nil if budget is too
// small even for that.
func fit(msg []byte, sh *shape, budget int) []byte {
	if len(msg) <= budget {
		return msg
	}
	var lengths []int
	wellFormed := collect(msg, sh, &lengths, 0)
	excess := len(msg) + markerMax - budget
	if limit, fits := common(lengths, excess); wellFormed && fits {
		out := cut(nil, msg, sh, limit)
		return appendMarker(out, sh.attrs, len(msg)-len(out))
	}
	out := skeleton(msg, sh)
	out = appendMarker(out, sh.attrs, len(msg)-len(out))
	if len(out) > budget {
		return nil
	}
	return out
}

// collect appends the lengths of the values of msg to lengths; it reports
// false if msg is not well-formed.
func collect(msg []byte, sh *shape, lengths *[]int, depth int) bool {
	if depth > maxNesting {
		return false
	}
	for len(msg) > 0 {
		num, typ, n := protowire.ConsumeTag(msg)
		if n < 0 {
			return false
		}
		m := protowire.ConsumeFieldValue(num, typ, msg[n:])
		if m < 0 {
			return false
		}
		if typ == protowire.BytesType {
			v, _ := protowire.ConsumeBytes(msg[n:])
			switch {
			case sh.values[num]:
				*lengths = append(*lengths, len(v))
			case sh.children[num] != nil:
				if !collect(v, sh.children[num], lengths, depth+1) {
					return false
				}
			}
		}
		msg = msg[n+m:]
	}
	return true
}

// maxNesting bounds the depth of arrays and key-value lists within lists
// that fit descends into; ingest refuses deeper messages.
const maxNesting = 64

// common returns the largest length that values may keep so that cutting the
// longer ones removes at least excess bytes; it reports false if cutting them
// all to nothing would not.
func common(lengths []int, excess int) (int, bool) {
	slices.SortFunc(lengths, func(a, b int) int { return b - a })
	sum := 0
	for k, l := range lengths {
		sum += l
		// Cut the k+1 longest to limit; they must stay at least as long
		// as the next one, or it would have to be cut too.
		limit := (sum - excess) / (k + 1)
		next := 0
		if k+1 < len(lengths) {
			next = lengths[k+1]
		}
		if limit >= next && sum-excess >= 0 {
			return min(limit, l), true
		}
	}
	return 0, false
}

// cut appends msg, which collect found well-formed, to dst with every value
// longer than limit cut to it. Messages nested within get new lengths;
// nothing else changes.
func cut(dst, msg []byte, sh *shape, limit int) []byte {
	for len(msg) > 0 {
		num, typ, n := protowire.ConsumeTag(msg)
		m := protowire.ConsumeFieldValue(num, typ, msg[n:])
		field := msg[:n+m]
		msg = msg[n+m:]
		if typ != protowire.BytesType {
			dst = append(dst, field...)
			continue
		}
		v, _ := protowire.ConsumeBytes(field[n:])
		switch {
		case sh.values[num] && len(v) > limit:
			dst = protowire.AppendTag(dst, num, protowire.BytesType)
			dst = protowire.AppendBytes(dst, shorten(v, limit, sh.strings[num]))
		case sh.children[num] != nil:
			child := cut(nil, v, sh.children[num], limit)
			dst = protowire.AppendTag(dst, num, protowire.BytesType)
			dst = protowire.AppendBytes(dst, child)
		default:
			dst = append(dst, field...)
		}
	}
	return dst
}

// shorten returns the first limit bytes of v, fewer if that would split a
// UTF-8 character of a string.
func shorten(v []byte, limit int, text bool) []byte {
	v = v[:limit]
	if !text {
		return v
	}
	for len(v) > 0 {
		r, size := utf8.DecodeLastRune(v)
		if r != utf8.RuneError || size > 1 {
			break
		}
		v = v[:len(v)-1]
	}
	return v
}

// skeleton keeps the fields of msg that are not length-delimited and those
// in sh.keep, cut to their lengths. A malformed rest is dropped.
func skeleton(msg []byte, sh *shape) []byte {
	var dst []byte
	for len(msg) > 0 {
		num, typ, n := protowire.ConsumeTag(msg)
		if n < 0 {
			break
		}
		m := protowire.ConsumeFieldValue(num, typ, msg[n:])
		if m < 0 {
			break
		}
		field := msg[:n+m]
		msg = msg[n+m:]
		if typ != protowire.BytesType {
			if typ != protowire.StartGroupType {
				dst = append(dst, field...)
			}
			continue
		}
		limit, kept := sh.keep[num]
		if !kept {
			continue
		}
		v, _ := protowire.ConsumeBytes(field[n:])
		dst = protowire.AppendTag(dst, num, protowire.BytesType)
		// Kept fields are names, cut at a character boundary, and IDs,
		// bytes never longer than their limit.
		dst = protowire.AppendBytes(dst, shorten(v, min(limit, len(v)), sh.strings[num]))
	}
	return dst
}

// appendMarker appends the cairn.truncated attribute, with the bytes removed,
// as field attrs.
func appendMarker(dst []byte, attrs protowire.Number, removed int) []byte {
	var kv []byte
	kv = protowire.AppendTag(kv, 1, protowire.BytesType)
	kv = protowire.AppendString(kv, TruncatedKey)
	kv = protowire.AppendTag(kv, 2, protowire.BytesType)
	kv = protowire.AppendVarint(kv, uint64(1+protowire.SizeVarint(uint64(removed))))
	kv = protowire.AppendTag(kv, 3, protowire.VarintType) // int_value
	kv = protowire.AppendVarint(kv, uint64(removed))
	dst = protowire.AppendTag(dst, attrs, protowire.BytesType)
	return protowire.AppendBytes(dst, kv)
}
