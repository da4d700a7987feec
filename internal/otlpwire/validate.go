package otlpwire

import (
	"fmt"

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
	_, _, err := keyValue(typ, v, depth)
	return err
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
