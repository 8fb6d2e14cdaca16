package metrics_test

import (
	"context"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/badge-dev/badge/ca/nodeapi"
	"github.com/badge-dev/badge/internal/metrics"
)

func TestNodeMetrics(t *testing.T) {
	m := newTestMetrics(t)
	if st := m.Status(context.Background()); st.AgentListener != nil {
		t.Errorf("status without an agent listener: %+v", st.AgentListener)
	}
	m.NodeAttestation(nodeapi.MethodJoinToken, nodeapi.ResultOK)
	m.NodeAttestation(nodeapi.MethodJoinToken, nodeapi.ResultRefused)
	m.NodeAttestation(nodeapi.MethodJoinToken, nodeapi.ResultRefused)
	m.NodeAttestation("bogus", "bogus") // ignored: no new series
	m.NodeSigned(nodeapi.KindX509)
	m.NodesConnected(3)
	want := `
# HELP badge_node_signings_total Credentials signed for agents, by kind (node_svid, x509, jwt).
# TYPE badge_node_signings_total counter
badge_node_signings_total{kind="jwt"} 0
badge_node_signings_total{kind="node_svid"} 0
badge_node_signings_total{kind="x509"} 1
# HELP badge_nodes_connected Nodes with an open connection to the agent listener.
# TYPE badge_nodes_connected gauge
badge_nodes_connected 3
`
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), "badge_node_signings_total", "badge_nodes_connected"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(m.Registry(), "badge_node_attestations_total"); n != len(nodeapi.Methods)*len(nodeapi.Results) {
		t.Errorf("attestation series: %d, want every method and result from the start", n)
	}
	m.SetAgentListener("127.0.0.1:8444", func() int { return 2 })
	if st := m.Status(context.Background()); st.AgentListener == nil || *st.AgentListener != (metrics.AgentStatus{Address: "127.0.0.1:8444", ConnectedNodes: 2}) {
		t.Errorf("status agent listener = %+v", st.AgentListener)
	}
}
