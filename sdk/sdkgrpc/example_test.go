package sdkgrpc_test

import (
	"context"
	"log"
	"net"

	"github.com/badge-dev/badge/sdk"
	"github.com/badge-dev/badge/sdk/sdkgrpc"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

var (
	orders   = spiffeid.RequireFromString("spiffe://example.org/orders")
	payments = spiffeid.RequireFromString("spiffe://example.org/payments")
)

func ExampleServerCredentials() {
	src, err := sdk.NewX509Source(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	defer src.Close()

	// Only orders may open a connection.
	srv := grpc.NewServer(grpc.Creds(sdkgrpc.ServerCredentials(src, sdk.AuthorizeID(orders))))
	l, err := net.Listen("tcp", ":8443")
	if err != nil {
		log.Fatal(err)
	}
	log.Fatal(srv.Serve(l))
}

func ExampleClientCredentials() {
	src, err := sdk.NewX509Source(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	defer src.Close()

	conn, err := grpc.NewClient("payments.internal:8443",
		grpc.WithTransportCredentials(sdkgrpc.ClientCredentials(src, sdk.AuthorizeID(payments))))
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
}

func ExamplePeerIDFromContext() {
	// In a handler of a server built with ServerCredentials:
	handler := func(ctx context.Context) error {
		caller, ok := sdkgrpc.PeerIDFromContext(ctx)
		if !ok || caller != orders {
			return status.Error(codes.PermissionDenied, "only orders may pay")
		}
		return nil
	}
	_ = handler
}

func ExampleWatchConns() {
	ctx := context.Background()
	src, err := sdk.NewX509Source(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer src.Close()

	// Close the connections of clients revoked after they connected.
	w := sdk.NewConnWatcher(src)
	go w.Run(ctx, src.Changed)
	creds := sdkgrpc.WatchConns(sdkgrpc.ServerCredentials(src, sdk.AuthorizeAny()), w)
	_ = grpc.NewServer(grpc.Creds(creds))
}
