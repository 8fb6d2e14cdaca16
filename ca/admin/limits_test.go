package admin_test

import (
	"net/http"
	"strings"
	"testing"
)

func TestOversizedHeaderRefused(t *testing.T) {
	_, s := newServer(t)
	for _, tc := range []struct {
		size int
		want int
	}{
		{1 << 10, http.StatusOK},
		{256 << 10, http.StatusRequestHeaderFieldsTooLarge},
	} {
		req, err := http.NewRequest(http.MethodGet, "http://badge/v1/health", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-Padding", strings.Repeat("a", tc.size))
		resp, err := s.http.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%d-byte header: %s, want %d", tc.size, resp.Status, tc.want)
		}
	}
}
