package otlpjson

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// ErrMalformed wraps every reason a document does not decode.
var ErrMalformed = errors.New("malformed OTLP/JSON")

// DecodeRequest decodes an OTLP/JSON ExportTraceServiceRequest and returns
// its binary protobuf encoding. Unknown fields are ignored, as the OTLP
// specification requires of receivers, and so are original (snake_case)
// field names accepted beside lowerCamelCase ones, as protojson does. It
// takes any document, through protojson's message tree, several times the
// document's size; Transcode takes the common ones faster, to the same
// bytes.
func DecodeRequest(doc []byte) ([]byte, error) {
	b64, err := rewriteIDs(validStrings(doc), hexToBase64)
	if err != nil {
		return nil, err
	}
	var req collectorpb.ExportTraceServiceRequest
	opts := protojson.UnmarshalOptions{DiscardUnknown: true}
	if err := opts.Unmarshal(b64, &req); err != nil {
		wide, ok := wideInts(b64)
		if !ok || opts.Unmarshal(wide, &req) != nil {
			return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
		}
	}
	return proto.Marshal(&req)
}

// wideInts returns doc with each integer attribute value that is a whole
// number past int64's range written as the double it is, and false if doc
// has none. JavaScript holds integer attributes as doubles: its protobuf
// exporters send 2^63 as the double, but its JSON exporter writes it as an
// integer, 9223372036854776000 (or 1e+21), which protojson refuses, with
// the whole request. A value that rounds into the range, as only -2^63
// written so does, stays an integer.
func wideInts(doc []byte) ([]byte, bool) {
	out, changed := doc, false
	for _, key := range [][2]string{{`"intValue"`, `"doubleValue"`}, {`"int_value"`, `"double_value"`}} {
		var c bool
		if out, c = rewriteWideInts(out, key[0], key[1]); c {
			changed = true
		}
	}
	return out, changed
}

// rewriteWideInts is wideInts for one spelling of the field's key, and of
// the key its doubles take instead.
func rewriteWideInts(doc []byte, key, doubleKey string) ([]byte, bool) {
	var out []byte
	last := 0 // doc[last:] is yet to be copied
	for i := 0; ; {
		k := bytes.Index(doc[i:], []byte(key))
		if k < 0 {
			break
		}
		k += i
		i = k + len(key)
		if k > 0 && doc[k-1] == '\\' {
			continue // inside a string
		}
		j := skipSpace(doc, i)
		if j == len(doc) || doc[j] != ':' {
			continue
		}
		j = skipSpace(doc, j+1)
		end := j
		for end < len(doc) && bytes.IndexByte([]byte("+-.0123456789eE"), doc[end]) >= 0 {
			end++
		}
		tok := doc[j:end]
		if _, err := strconv.ParseInt(string(tok), 10, 64); err == nil || !IsNumber(tok) {
			continue
		}
		v, err := strconv.ParseFloat(string(tok), 64)
		if err != nil || math.IsInf(v, 0) || v != math.Trunc(v) {
			continue
		}
		out = append(out, doc[last:k]...)
		if v >= -(1<<63) && v < 1<<63 {
			out = strconv.AppendInt(append(out, doc[k:j]...), int64(v), 10)
		} else {
			out = append(append(out, doubleKey...), doc[k+len(key):end]...)
		}
		last, i = end, end
	}
	if out == nil {
		return doc, false
	}
	return append(out, doc[last:]...), true
}

// skipSpace returns the offset of the first byte of doc from i on that is
// not JSON white space.
func skipSpace(doc []byte, i int) int {
	for i < len(doc) && isSpace(doc[i]) {
		i++
	}
	return i
}

// Transcode is DecodeRequest for the documents SDKs and the Collector
// write, in one pass over doc that takes about its size in memory; false
// leaves doc to DecodeRequest.
func Transcode(doc []byte) ([]byte, bool) {
	wire, err := transcode(doc)
	return wire, err == nil
}

// Marshal encodes m as OTLP/JSON.
func Marshal(m proto.Message) ([]byte, error) {
	b, err := protojson.MarshalOptions{UseEnumNumbers: true}.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode OTLP/JSON: %w", err)
	}
	return rewriteIDs(b, base64ToHex)
}

// isIDField reports whether a JSON object key names a trace or span ID, in
// either spelling protojson accepts.
func isIDField(key []byte) bool {
	switch string(key) {
	case "traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id":
		return true
	}
	return false
}

// rewriteIDs copies doc with the string value of every ID field passed
// through conv.
func rewriteIDs(doc []byte, conv func(dst, s []byte) ([]byte, error)) ([]byte, error) {
	out := make([]byte, 0, len(doc)+len(doc)/8)
	last := 0 // doc[last:] is yet to be copied
	err := EachStringMember(doc, func(key []byte, start, end int) error {
		if !isIDField(key) {
			return nil
		}
		raw := doc[start+1 : end-1]
		if bytes.IndexByte(raw, '\\') >= 0 {
			raw = unquote(doc[start:end])
		}
		out = append(out, doc[last:start+1]...)
		var err error
		if out, err = conv(out, raw); err != nil {
			return err
		}
		out = append(out, '"')
		last = end
		return nil
	})
	if err != nil {
		return nil, err
	}
	return append(out, doc[last:]...), nil
}

// EachStringMember calls fn for every object member of doc whose value is a
// string, with the member's key, unescaped, and the offsets of the value's
// opening quote and just past its closing one; an error from fn stops the
// scan. It relies on the JSON being well formed only as far as finding
// strings goes: whatever else is wrong is left for a parser to report.
func EachStringMember(doc []byte, fn func(key []byte, start, end int) error) error {
	var key []byte // the key of the member whose value comes next, if any
	for i := 0; i < len(doc); {
		c := doc[i]
		if c != '"' {
			if c != ':' && !isSpace(c) {
				key = nil // the member's value is not a string
			}
			i++
			continue
		}
		end, escaped := scanString(doc, i)
		if end < 0 {
			return nil // unterminated
		}
		if j := skipSpace(doc, end); j < len(doc) && doc[j] == ':' {
			key = doc[i+1 : end-1]
			if escaped {
				key = unquote(doc[i:end])
			}
		} else if key != nil {
			if err := fn(key, i, end); err != nil {
				return err
			}
			key = nil
		}
		i = end
	}
	return nil
}

// scanString returns the offset just past the string that starts with the
// quote at doc[i], and whether it holds escapes; -1 if it is unterminated.
func scanString(doc []byte, i int) (end int, escaped bool) {
	for j := i + 1; j < len(doc); j++ {
		switch doc[j] {
		case '\\':
			escaped = true
			j++
		case '"':
			return j + 1, escaped
		}
	}
	return -1, escaped
}

// validStrings returns doc with every string made valid Unicode, as Go's
// encoding/json and the Collector decode them: each byte that is not part
// of valid UTF-8 becomes U+FFFD, and so does each \u escape of half a
// surrogate pair. protojson refuses the whole document for either, but an
// SDK that cuts a string at a length limit can split an emoji, and its
// protobuf exporters send U+FFFD there; the request's other spans must not
// be lost for it. A document without such strings is returned as it is.
func validStrings(doc []byte) []byte {
	if utf8.Valid(doc) && !bytes.Contains(doc, []byte(`\ud`)) && !bytes.Contains(doc, []byte(`\uD`)) {
		return doc
	}
	out := make([]byte, 0, len(doc)+16)
	inString := false
	for i := 0; i < len(doc); {
		c := doc[i]
		switch {
		case !inString:
			inString = c == '"'
			out = append(out, c)
			i++
		case c == '"':
			inString = false
			out = append(out, c)
			i++
		case c == '\\' && i+1 < len(doc) && doc[i+1] == 'u':
			r, n := unicodeEscape(doc, i)
			switch {
			case n == 0: // not four hex digits: left for protojson to refuse
				out = append(out, doc[i:i+2]...)
				i += 2
			case r == utf8.RuneError:
				out = append(out, `\ufffd`...)
				i += n
			default:
				out = append(out, doc[i:i+n]...)
				i += n
			}
		case c == '\\' && i+1 < len(doc):
			out = append(out, doc[i:i+2]...)
			i += 2
		default: // the run of plain bytes up to the next quote or escape
			j := i + 1
			for j < len(doc) && doc[j] != '"' && doc[j] != '\\' {
				j++
			}
			out = appendValidUTF8(out, doc[i:j])
			i = j
		}
	}
	return out
}

// appendValidUTF8 appends s to dst with each byte that is not part of
// valid UTF-8 replaced by U+FFFD, as encoding/json decodes it.
func appendValidUTF8(dst, s []byte) []byte {
	for len(s) > 0 {
		r, n := utf8.DecodeRune(s)
		if r == utf8.RuneError && n <= 1 {
			dst = utf8.AppendRune(dst, utf8.RuneError)
			s = s[1:]
			continue
		}
		dst = append(dst, s[:n]...)
		s = s[n:]
	}
	return dst
}

// unicodeEscape decodes the \u escape at doc[i], with the low surrogate
// that must follow a high one, and returns the rune and the bytes it took:
// utf8.RuneError for half a surrogate pair, which takes the half's six, and
// 0 bytes if the escape does not have four hex digits.
func unicodeEscape(doc []byte, i int) (rune, int) {
	hi, ok := hex4(doc, i+2)
	switch {
	case !ok:
		return 0, 0
	case !utf16.IsSurrogate(hi):
		return hi, 6
	case hi >= 0xdc00 || len(doc) < i+12 || doc[i+6] != '\\' || doc[i+7] != 'u':
		return utf8.RuneError, 6
	}
	lo, ok := hex4(doc, i+8)
	if r := utf16.DecodeRune(hi, lo); ok && r != utf8.RuneError {
		return r, 12
	}
	return utf8.RuneError, 6
}

func hex4(doc []byte, i int) (rune, bool) {
	if len(doc) < i+4 {
		return 0, false
	}
	v, err := strconv.ParseUint(string(doc[i:i+4]), 16, 16)
	return rune(v), err == nil
}

func unquote(quoted []byte) []byte {
	var s string
	if json.Unmarshal(quoted, &s) != nil {
		return quoted // left for protojson to reject
	}
	return []byte(s)
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func hexToBase64(dst, s []byte) ([]byte, error) {
	raw := make([]byte, hex.DecodedLen(len(s)))
	if _, err := hex.Decode(raw, s); err != nil {
		return nil, fmt.Errorf("%w: ID %q is not hex", ErrMalformed, s)
	}
	return base64.StdEncoding.AppendEncode(dst, raw), nil
}

func base64ToHex(dst, s []byte) ([]byte, error) {
	raw, err := base64.StdEncoding.AppendDecode(nil, s)
	if err != nil {
		return nil, fmt.Errorf("encode OTLP/JSON: ID %q is not base64", s)
	}
	return hex.AppendEncode(dst, raw), nil
}
