package dnstest

// TB is the part of testing.TB that StartT needs; *testing.T and
// *testing.B satisfy it. Naming it here keeps package testing out of
// programs that use the cluster outside tests.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
	Cleanup(func())
}

// StartT starts a cluster for a test, fails the test when it cannot, and
// stops the cluster when the test ends.
func StartT(t TB, opts Options) *Cluster {
	t.Helper()
	c, err := Start(opts)
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
