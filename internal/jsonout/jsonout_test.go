package jsonout

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestRespond(t *testing.T) {
	rec := httptest.NewRecorder()
	rec.Header().Set("Cache-Control", "no-store")
	Respond(rec, http.StatusCreated, map[string]int{"a": 1})
	if rec.Code != http.StatusCreated {
		t.Errorf("status %d, want %d", rec.Code, http.StatusCreated)
	}
	if got := rec.Header().Get("Content-Type"); got != "application/json" {
		t.Errorf("Content-Type %q, want application/json", got)
	}
	if got := rec.Header().Get("Cache-Control"); got != "no-store" {
		t.Errorf("Cache-Control %q: a header set before was lost", got)
	}
	if got, want := rec.Body.String(), "{\n  \"a\": 1\n}\n"; got != want {
		t.Errorf("body %q, want %q", got, want)
	}
}

func TestWrite(t *testing.T) {
	var b strings.Builder
	if err := Write(&b, []string{"x"}); err != nil {
		t.Fatal(err)
	}
	if got, want := b.String(), "[\n  \"x\"\n]\n"; got != want {
		t.Errorf("Write = %q, want %q", got, want)
	}
}
