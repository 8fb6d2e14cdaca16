// Package jsonout writes JSON the way every badge binary and API prints
// it: indented by two spaces, one value per call, ending in a newline.
package jsonout

import (
	"encoding/json"
	"io"
	"net/http"
)

// Write writes v to w as indented JSON.
func Write(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// Respond answers an HTTP request with status code and v as indented
// JSON. Headers the caller set before stay. An error encoding v can only
// be reported to nobody: the status is already sent.
func Respond(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	Write(w, v)
}
