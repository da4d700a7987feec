package otlpwire

import (
	"encoding/binary"
	"fmt"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// The validators below check the nested OTLP messages that a span, resource
// or scope carries. They look only at fields whose meaning they know; unknown
// fields were already checked for wire-format validity by walkFields and are
// kept verbatim, as protobuf requires of unknown fields.

func validateResource(v []byte) error {
	return walkFields(v, func(num protowire.Number, typ protowire.Type, v []byte) error {
		switch num {
		case 1: // attributes
			return validateKeyValue(typ, v, 0)
		case 3: // entity_refs
			return validateMessage(typ, v, "Resource.entity_refs", validateEntityRef)
		}
		return nil
	})
}

func validateEntityRef(v []byte) error {
	return walkFields(v, func(num protowire.Number, typ protowire.Type, v []byte) error {
		switch num {
		case 1, 2, 3, 4: // schema_url, type, id_keys, description_keys
			return checkString(typ, v, "EntityRef string field")
		}
		return nil
	})
}

func validateScope(v []byte) error {
	return walkFields(v, func(num protowire.Number, typ protowire.Type, v []byte) error {
		switch num {
		case 1, 2: // name, version
			return checkString(typ, v, "InstrumentationScope string field")
		case 3: // attributes
			return validateKeyValue(typ, v, 0)
		}
		return nil
	})
}

func validateEvent(v []byte) error {
	return walkFields(v, func(num protowire.Number, typ protowire.Type, v []byte) error {
		switch num {
		case 2: // name
			return checkString(typ, v, "Span.Event.name")
		case 3: // attributes
			return validateKeyValue(typ, v, 0)
		}
		return nil
	})
}

func validateLink(v []byte) error {
	return walkFields(v, func(num protowire.Number, typ protowire.Type, v []byte) error {
		switch num {
		case 1, 2: // trace_id, span_id
			if typ != protowire.BytesType {
				return wrongType("Span.Link id")
			}
		case 3: // trace_state
			return checkString(typ, v, "Span.Link.trace_state")
		case 4: // attributes
			return validateKeyValue(typ, v, 0)
		}
		return nil
	})
}

func validateStatus(v []byte) error {
	return walkFields(v, func(num protowire.Number, typ protowire.Type, v []byte) error {
		if num == 2 { // message
			return checkString(typ, v, "Status.message")
		}
		return nil
	})
}

func validateKeyValue(typ protowire.Type, v []byte, depth int) error {
	_, _, _, _, _, err := scalarAttribute(typ, v, depth)
	return err
}

// scalarAttribute validates an encoded KeyValue and reads its key and, as
// scalar does, its value if scalar (ok false otherwise): in one pass if it
// is laid out as encoders write it (plainKeyValue), else field by field.
func scalarAttribute(typ protowire.Type, v []byte, depth int) (key []byte, t ValueType, b []byte, num uint64, ok bool, err error) {
	if typ == protowire.BytesType {
		if key, t, b, num, ok = plainKeyValue(v); ok {
			return key, t, b, num, true, nil
		}
	}
	key, val, err := keyValue(typ, v, depth)
	if err != nil {
		return nil, 0, nil, 0, false, err
	}
	t, b, num, ok = scalar(val)
	return key, t, b, num, ok, nil
}

// keyValue validates an encoded KeyValue and returns its key and its
// encoded value, the last of each as Attributes reads them.
func keyValue(typ protowire.Type, v []byte, depth int) (key, val []byte, err error) {
	if typ != protowire.BytesType {
		return nil, nil, wrongType("KeyValue")
	}
	err = walkFields(v, func(num protowire.Number, typ protowire.Type, v []byte) error {
		switch num {
		case 1: // key
			key = v
			return checkString(typ, v, "KeyValue.key")
		case 2: // value
			val = v
			return validateAnyValue(typ, v, depth)
		}
		return nil
	})
	return key, val, err
}

// Wire tags of the fields a scalar attribute holds: KeyValue's key and value,
// and AnyValue's scalar oneof fields.
const (
	tagKey    = 1<<3 | byte(protowire.BytesType)
	tagValue  = 2<<3 | byte(protowire.BytesType)
	tagString = byte(StringValue)<<3 | byte(protowire.BytesType)
	tagBool   = byte(BoolValue)<<3 | byte(protowire.VarintType)
	tagInt    = byte(IntValue)<<3 | byte(protowire.VarintType)
	tagDouble = byte(DoubleValue)<<3 | byte(protowire.Fixed64Type)
	tagBytes  = byte(BytesValue)<<3 | byte(protowire.BytesType)
)

// plainKeyValue reads an encoded KeyValue laid out as every OTLP encoder
// writes one with a scalar value: its key, then a value of one field. It
// returns what keyValue and then scalar would, and ok false for any other
// layout, invalid UTF-8 included, which they then read and validate field by
// field. Span attributes are most of what a request holds, and most of
// Parse's time went into walking them twice through callbacks.
func plainKeyValue(kv []byte) (key []byte, t ValueType, b []byte, num uint64, ok bool) {
	if len(kv) == 0 || kv[0] != tagKey {
		return nil, 0, nil, 0, false
	}
	key, n := protowire.ConsumeBytes(kv[1:])
	if n < 0 {
		return nil, 0, nil, 0, false
	}
	kv = kv[1+n:]
	if len(kv) == 0 || kv[0] != tagValue {
		return nil, 0, nil, 0, false
	}
	val, n := protowire.ConsumeBytes(kv[1:])
	if n < 0 || 1+n != len(kv) || len(val) == 0 {
		return nil, 0, nil, 0, false
	}
	tag, val := val[0], val[1:]
	switch tag {
	case tagString, tagBytes:
		b, n = protowire.ConsumeBytes(val)
		if tag == tagString && n >= 0 && !utf8.Valid(b) {
			return nil, 0, nil, 0, false
		}
		t = ValueType(tag >> 3)
	case tagBool, tagInt:
		num, n = protowire.ConsumeVarint(val)
		t = ValueType(tag >> 3)
		if t == BoolValue && num != 0 {
			num = 1
		}
	case tagDouble:
		n = -1
		if len(val) >= 8 {
			num, n = binary.LittleEndian.Uint64(val), 8
		}
		t = DoubleValue
	default:
		return nil, 0, nil, 0, false
	}
	if n != len(val) || !utf8.Valid(key) {
		return nil, 0, nil, 0, false
	}
	return key, t, b, num, true
}

func validateAnyValue(typ protowire.Type, v []byte, depth int) error {
	if typ != protowire.BytesType {
		return wrongType("AnyValue")
	}
	if depth >= maxDepth {
		return fmt.Errorf("%w: attribute values nested deeper than %d levels", ErrMalformed, maxDepth)
	}
	return walkFields(v, func(num protowire.Number, typ protowire.Type, v []byte) error {
		switch num {
		case 1: // string_value
			return checkString(typ, v, "AnyValue.string_value")
		case 5: // array_value
			return validateMessage(typ, v, "AnyValue.array_value", func(arr []byte) error {
				return walkFields(arr, func(num protowire.Number, typ protowire.Type, v []byte) error {
					if num == 1 {
						return validateAnyValue(typ, v, depth+1)
					}
					return nil
				})
			})
		case 6: // kvlist_value
			return validateMessage(typ, v, "AnyValue.kvlist_value", func(list []byte) error {
				return walkFields(list, func(num protowire.Number, typ protowire.Type, v []byte) error {
					if num == 1 {
						return validateKeyValue(typ, v, depth+1)
					}
					return nil
				})
			})
		}
		return nil
	})
}
