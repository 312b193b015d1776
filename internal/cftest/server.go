package cftest

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"time"
)

// Server is a fake Cloudflare API listening on a random loopback port, in
// the manner of httptest.Server.
type Server struct {
	*API
	// URL is the API's base URL, as a publisher's BaseURL:
	// http://127.0.0.1:PORT/client/v4.
	URL string

	ts *httptest.Server
}

// NewServer starts a fake that accepts token and has the given zones. Call
// Close when done.
func NewServer(token string, zones ...string) *Server {
	return Start(NewAPI(token, zones...))
}

// Start serves api on a random loopback port.
func Start(api *API) *Server {
	ts := httptest.NewServer(api)
	return &Server{API: api, URL: ts.URL + BasePath, ts: ts}
}

// Client returns an HTTP client for the server.
func (s *Server) Client() *http.Client { return s.ts.Client() }

// Close shuts the server down, waiting for calls in progress.
func (s *Server) Close() { s.ts.Close() }

// CloseClientConnections closes every open connection to the server.
func (s *Server) CloseClientConnections() { s.ts.CloseClientConnections() }

// ListenAndServe runs a fake accepting token, with the given empty zones, on
// addr, which must be a loopback address ("127.0.0.1:8443"). It returns only
// on error.
func ListenAndServe(addr, token string, zones ...string) error {
	if err := checkLoopback(addr); err != nil {
		return err
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("cftest: %w", err)
	}
	return Serve(l, NewAPI(token, zones...))
}

// Serve serves api on l until l is closed.
func Serve(l net.Listener, api *API) error {
	srv := &http.Server{Handler: api, ReadHeaderTimeout: 10 * time.Second}
	err := srv.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("cftest: %w", err)
}

func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("cftest: listen address %q: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("cftest: listen address %q is not a loopback address", addr)
}
