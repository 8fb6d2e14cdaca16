package sdk_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"

	"github.com/badge-dev/badge/sdk"
)

func ExampleNewJWTSource() {
	// Wait at most 30 seconds for the JWT bundles; the source then follows
	// them until Close.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	src, err := sdk.NewJWTSource(ctx) // SPIFFE_ENDPOINT_SOCKET, BADGE_SOCKET or /run/badge/workload.sock
	if err != nil {
		log.Fatal(err)
	}
	defer src.Close()
}

func ExampleJWTSource_FetchJWTSVID() {
	src, err := sdk.NewJWTSource(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	defer src.Close()
	// Cached: asking again within half the token's lifetime costs nothing.
	svid, err := src.FetchJWTSVID(context.Background(), jwtsvid.Params{Audience: "spiffe://example.org/queue"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("Authorization: Bearer " + svid.Marshal())
}

func ExampleJWTSource_ValidateJWTSVID() {
	src, err := sdk.NewJWTSource(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	defer src.Close()
	var token string // from a message, a header, ...
	svid, err := src.ValidateJWTSVID(token, "spiffe://example.org/queue")
	var te *sdk.TokenError
	switch {
	case errors.As(err, &te) && te.Reason == sdk.TokenExpired:
		fmt.Println("expired; ask the sender to fetch a new one")
	case err != nil:
		fmt.Println("refused:", err)
	default:
		fmt.Println("message from", svid.ID)
	}
}

func ExampleRequireJWT() {
	src, err := sdk.NewJWTSource(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	defer src.Close()
	pay := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		svid, _ := sdk.JWTSVIDFromRequest(r)
		fmt.Fprintln(w, "paid for", svid.ID)
	})
	// Behind a TLS-terminating proxy: the caller proves itself with a
	// token for our audience, and only orders may pay.
	mux := http.NewServeMux()
	mux.Handle("POST /pay", sdk.RequireJWT(src, "spiffe://example.org/payments", sdk.AuthorizeID(orders), pay,
		sdk.OnJWTRefused(func(r *http.Request, err *sdk.TokenError) { log.Printf("%s %s: %v", r.Method, r.URL.Path, err) })))
	log.Fatal(http.ListenAndServe("127.0.0.1:8080", mux))
}

func ExampleNewJWTTransport() {
	src, err := sdk.NewJWTSource(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	defer src.Close()
	client := &http.Client{Transport: sdk.NewJWTTransport(src, "spiffe://example.org/payments", nil)}
	resp, err := client.Post("https://payments.example.org/pay", "application/json", nil)
	if err != nil {
		log.Fatal(err)
	}
	resp.Body.Close()
}

func ExampleTokenError() {
	// RequireJWT answers 401 without saying why; the reason goes to the hook.
	var v sdk.JWTValidator = rejectAll{}
	h := sdk.RequireJWT(v, "payments", sdk.AuthorizeAny(), http.NotFoundHandler(),
		sdk.OnJWTRefused(func(_ *http.Request, err *sdk.TokenError) { fmt.Println(err.Reason) }))
	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Set("Authorization", "Bearer a.b.c")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	fmt.Println(rec.Code, rec.Header().Get("WWW-Authenticate"))
	// Output:
	// expired
	// 401 Bearer realm="badge", error="invalid_token"
}

// rejectAll is a JWTValidator that finds every token expired.
type rejectAll struct{}

func (rejectAll) ValidateJWTSVID(string, string) (*jwtsvid.SVID, error) {
	return nil, &sdk.TokenError{Reason: sdk.TokenExpired}
}
