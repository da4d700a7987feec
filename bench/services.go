package bench

import (
	"fmt"
	"math/rand/v2"
	"strings"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
)

type service struct {
	name      string
	instances []*instance
	ops       []operation
	calls     []call
}

// instance is one process of a service: its own resource and clock.
type instance struct {
	resource *resourcepb.Resource
	skew     int64 // nanoseconds this host's clock is off
}

type call struct {
	svc   *service
	db    bool
	async bool
}

type operation struct {
	name  string
	kind  tracepb.Span_SpanKind
	attrs func(*rand.Rand) []*commonpb.KeyValue
}

// newServices builds the call graph of a web shop: 14 services, the first of
// which (frontend) receives every trace's root request.
func newServices(rng *rand.Rand) []*service {
	names := []string{"frontend", "checkout", "cart", "product-catalog", "currency", "payment", "shipping",
		"email", "recommendation", "ad", "quote", "accounting", "fraud-detection", "inventory"}
	byName := map[string]*service{}
	var svcs []*service
	for i, n := range names {
		s := &service{name: n}
		for j := range 2 + i%3 {
			s.instances = append(s.instances, newInstance(rng, n, j))
		}
		s.ops = operationsFor(n)
		byName[n] = s
		svcs = append(svcs, s)
	}
	edges := map[string][]string{
		"frontend":        {"product-catalog", "cart", "recommendation", "ad", "currency", "checkout"},
		"checkout":        {"cart", "currency", "payment", "shipping", "email", "product-catalog", "db", "async:accounting"},
		"cart":            {"db"},
		"product-catalog": {"db", "inventory"},
		"recommendation":  {"product-catalog"},
		"shipping":        {"quote", "db"},
		"payment":         {"fraud-detection", "db"},
		"inventory":       {"db"},
		"accounting":      {"db", "async:fraud-detection"},
		"fraud-detection": {"db"},
	}
	for from, tos := range edges {
		s := byName[from]
		for _, to := range tos {
			switch {
			case to == "db":
				s.calls = append(s.calls, call{db: true})
			case len(to) > 6 && to[:6] == "async:":
				s.calls = append(s.calls, call{svc: byName[to[6:]], async: true})
			default:
				s.calls = append(s.calls, call{svc: byName[to]})
			}
		}
	}
	return svcs
}

func newInstance(rng *rand.Rand, svc string, n int) *instance {
	pod := fmt.Sprintf("%s-%x-%05x", svc, rng.Uint32()&0xffffff, rng.Uint32()&0xfffff)
	return &instance{
		skew: int64(rng.IntN(4_000_000)) - 2_000_000, // ±2ms
		resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{
			str("service.name", svc),
			str("service.namespace", "shop"),
			str("service.version", fmt.Sprintf("1.%d.%d", rng.IntN(20), rng.IntN(10))),
			str("service.instance.id", fmt.Sprintf("%08x-%04x-%04x", rng.Uint32(), rng.Uint32()&0xffff, n)),
			str("host.name", fmt.Sprintf("node-%d.cluster.local", rng.IntN(40))),
			str("k8s.pod.name", pod),
			str("k8s.namespace.name", "shop"),
			str("deployment.environment.name", "production"),
			str("telemetry.sdk.language", "go"),
			str("telemetry.sdk.name", "opentelemetry"),
			str("telemetry.sdk.version", "1.35.0"),
		}},
	}
}

func operationsFor(svc string) []operation {
	if svc == "frontend" {
		routes := []string{"/api/products/%d", "/api/cart/%d", "/api/checkout/%d", "/api/recommendations/%d", "/product/%d"}
		methods := []string{"GET", "GET", "GET", "POST"}
		var ops []operation
		for i, r := range routes {
			route, method := r, methods[i%len(methods)]
			ops = append(ops, operation{
				name: method + " " + strings.Replace(route, "%d", "{id}", 1),
				kind: tracepb.Span_SPAN_KIND_SERVER,
				attrs: func(rng *rand.Rand) []*commonpb.KeyValue {
					status := int64(200)
					if rng.IntN(50) == 0 {
						status = 404
					}
					return []*commonpb.KeyValue{
						str("http.request.method", method),
						str("url.path", fmt.Sprintf(route, rng.IntN(100000))),
						str("url.scheme", "https"),
						str("http.route", strings.Replace(route, "%d", "{id}", 1)),
						integer("http.response.status_code", status),
						str("user_agent.original", userAgents[rng.IntN(len(userAgents))]),
						str("client.address", fmt.Sprintf("10.%d.%d.%d", rng.IntN(256), rng.IntN(256), rng.IntN(256))),
						str("enduser.id", fmt.Sprintf("user-%d", rng.IntN(200000))),
					}
				},
			})
		}
		return ops
	}
	methods := []string{"Get", "List", "Update", "Process"}
	var ops []operation
	for _, m := range methods {
		name := fmt.Sprintf("shop.%s/%s", svc, m)
		ops = append(ops, operation{
			name: name,
			kind: tracepb.Span_SPAN_KIND_SERVER,
			attrs: func(rng *rand.Rand) []*commonpb.KeyValue {
				return []*commonpb.KeyValue{
					str("rpc.system", "grpc"),
					str("rpc.service", "shop."+svc),
					str("rpc.method", m),
					integer("rpc.grpc.status_code", 0),
					str("app.request.id", fmt.Sprintf("%016x", rng.Uint64())),
					{Key: "app.cache.hit", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_BoolValue{BoolValue: rng.IntN(3) == 0}}},
					{Key: "app.items", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: int64(rng.IntN(20))}}},
				}
			},
		})
	}
	return ops
}

var userAgents = []string{
	"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36",
	"Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
	"Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
	"okhttp/4.12.0",
}
