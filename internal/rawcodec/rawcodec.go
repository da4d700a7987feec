// Package rawcodec is a gRPC codec that lets handlers receive and send
// protobuf messages in their encoded form. cairn stores the bytes clients send
// and serves stored bytes back, so decoding and re-encoding them in between
// would cost CPU and could only lose information.
package rawcodec

import (
	"context"
	"fmt"
	"slices"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// Message is an encoded protobuf message. A *Message passed to a stream's
// RecvMsg receives the encoded bytes; a Message passed to SendMsg is sent as
// is, as is a mem.Buffer, which gRPC frees once it has written it. RecvMsg
// also takes a *Reused. Every other value must be a proto.Message.
type Message []byte

// Reused is a buffer that a stream's RecvMsg copies each message into, over
// the message before, so that a client reading many messages of megabytes
// does not take fresh memory for each: on a virtual machine, whose page
// faults cost about 14 µs, copying a 10,000-span trace into fresh memory
// took milliseconds.
type Reused struct{ B []byte }

// Codec is the codec. Clients use it as it is; servers install it with
// ServerOptions.
type Codec struct{}

// ServerOptions make a gRPC server use Codec for every service it serves,
// and answer a request message that does not decode with InvalidArgument.
// gRPC answers Internal for any error of a codec, which tells a client
// that sent invalid UTF-8 or bytes that are not protobuf that the server
// is at fault. So the server's codec decodes such a message as empty but
// for a note of why, under a field number no message of cairn's uses, and
// interceptors refuse it before any handler sees it.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ForceServerCodecV2(serverCodec{}),
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			if err := undecoded(req); err != nil {
				return nil, err
			}
			return handler(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			return handler(srv, checkedStream{ss})
		}),
	}
}

// undecodedField is the field number under which serverCodec notes why a
// message did not decode: the largest valid, which no message of cairn's
// uses.
const undecodedField = protowire.MaxValidNumber

type serverCodec struct{ Codec }

func (c serverCodec) Unmarshal(data mem.BufferSlice, v any) error {
	err := c.Codec.Unmarshal(data, v)
	m, ok := v.(proto.Message)
	if err == nil || !ok {
		return err
	}
	proto.Reset(m)
	note := protowire.AppendTag(nil, undecodedField, protowire.BytesType)
	m.ProtoReflect().SetUnknown(protowire.AppendBytes(note, []byte(err.Error())))
	return nil
}

// undecoded returns InvalidArgument, saying why, for a message that
// serverCodec could not decode.
func undecoded(v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return nil
	}
	u := m.ProtoReflect().GetUnknown()
	num, typ, n := protowire.ConsumeTag(u)
	if n < 0 || num != undecodedField || typ != protowire.BytesType {
		return nil
	}
	why, _ := protowire.ConsumeBytes(u[n:])
	return status.Errorf(codes.InvalidArgument, "request message does not decode: %s", why)
}

// checkedStream refuses a stream's messages that did not decode.
type checkedStream struct{ grpc.ServerStream }

func (s checkedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	return undecoded(m)
}

// Name is "proto": on the wire this is ordinary protobuf.
func (Codec) Name() string { return "proto" }

// Marshal encodes v.
func (Codec) Marshal(v any) (mem.BufferSlice, error) {
	switch m := v.(type) {
	case Message:
		return mem.BufferSlice{mem.SliceBuffer(m)}, nil
	case mem.Buffer:
		return mem.BufferSlice{m}, nil
	case proto.Message:
		b, err := proto.Marshal(m)
		if err != nil {
			return nil, err
		}
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	default:
		return nil, fmt.Errorf("rawcodec: cannot marshal %T", v)
	}
}

// Size is the encoded size of v, and whether Codec encodes values of its
// type at all.
func Size(v any) (n int, ok bool) {
	switch m := v.(type) {
	case Message:
		return len(m), true
	case mem.Buffer:
		return m.Len(), true
	case proto.Message:
		return proto.Size(m), true
	}
	return 0, false
}

// Unmarshal decodes data into v. Into a *Message it copies the bytes out of
// gRPC's recycled buffers.
func (Codec) Unmarshal(data mem.BufferSlice, v any) error {
	switch m := v.(type) {
	case *Message:
		*m = data.Materialize()
		return nil
	case *Reused:
		m.B = slices.Grow(m.B[:0], data.Len())[:data.Len()]
		data.CopyTo(m.B)
		return nil
	case proto.Message:
		buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
		defer buf.Free()
		return proto.Unmarshal(buf.ReadOnlyData(), m)
	default:
		return fmt.Errorf("rawcodec: cannot unmarshal into %T", v)
	}
}
