package metrics

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/badge-dev/badge/ca/nodeapi"
)

// nodeMetrics are the metrics of the agent listener (ca/nodeapi): every
// series exists from the start, at zero; labels come from nodeapi's fixed
// sets, never a node name.
type nodeMetrics struct {
	attest    map[string]map[string]prometheus.Counter // method → result
	signed    map[string]prometheus.Counter            // kind
	connected prometheus.Gauge

	mu      sync.Mutex
	addr    string     // the agent listener's address; "" when off
	nodesFn func() int // connected nodes
}

func (m *Metrics) registerNodes() {
	attest := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "badge_node_attestations_total",
		Help: "Node attestations on the agent listener, by method (join_token, x509pop) and result (ok, refused, limited, invalid, error).",
	}, []string{"method", "result"})
	signed := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "badge_node_signings_total",
		Help: "Credentials signed for agents, by kind (node_svid, x509, jwt).",
	}, []string{"kind"})
	m.nodes.connected = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "badge_nodes_connected",
		Help: "Nodes with an open connection to the agent listener.",
	})
	m.nodes.attest = map[string]map[string]prometheus.Counter{}
	for _, method := range nodeapi.Methods {
		m.nodes.attest[method] = map[string]prometheus.Counter{}
		for _, r := range nodeapi.Results {
			m.nodes.attest[method][r] = attest.WithLabelValues(method, r)
		}
	}
	m.nodes.signed = labelled(nodeapi.Kinds, signed.WithLabelValues)
	m.reg.MustRegister(attest, signed, m.nodes.connected)
}

var _ nodeapi.Metrics = (*Metrics)(nil)

// NodeAttestation implements nodeapi.Metrics.
func (m *Metrics) NodeAttestation(method, result string) {
	if c, ok := m.nodes.attest[method][result]; ok {
		c.Inc()
	}
}

// NodeSigned implements nodeapi.Metrics.
func (m *Metrics) NodeSigned(kind string) {
	if c, ok := m.nodes.signed[kind]; ok {
		c.Inc()
	}
}

// NodesConnected implements nodeapi.Metrics.
func (m *Metrics) NodesConnected(n int) { m.nodes.connected.Set(float64(n)) }

// SetAgentListener tells the status the agent listener's address and how
// to count its connected nodes.
func (m *Metrics) SetAgentListener(addr string, connected func() int) {
	m.nodes.mu.Lock()
	defer m.nodes.mu.Unlock()
	m.nodes.addr, m.nodes.nodesFn = addr, connected
}

// AgentStatus is the agent listener in the status.
type AgentStatus struct {
	Address        string `json:"address"`
	ConnectedNodes int    `json:"connected_nodes"`
}

func (m *Metrics) agentStatus() *AgentStatus {
	m.nodes.mu.Lock()
	defer m.nodes.mu.Unlock()
	if m.nodes.addr == "" {
		return nil
	}
	return &AgentStatus{Address: m.nodes.addr, ConnectedNodes: m.nodes.nodesFn()}
}
