package main

import (
	"runtime/debug"
	"testing"
)

func TestVersionOf(t *testing.T) {
	for _, tt := range []struct {
		bi   debug.BuildInfo
		want string
	}{
		{debug.BuildInfo{Main: debug.Module{Version: "v1.2.0"}}, "v1.2.0"},
		{debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "5fb7e5c1a2b3c4d5e6f708192a3b4c5d6e7f8091"},
			{Key: "vcs.time", Value: "2026-11-29T15:00:00Z"},
			{Key: "vcs.modified", Value: "true"},
		}}, "(devel) (rev 5fb7e5c1a2b3+dirty, 2026-11-29T15:00:00Z)"},
		{debug.BuildInfo{Main: debug.Module{Version: "v1.3.0"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "abc123"},
		}}, "v1.3.0 (rev abc123)"},
	} {
		if got := versionOf(&tt.bi); got != tt.want {
			t.Errorf("versionOf(%+v) = %q, want %q", tt.bi, got, tt.want)
		}
	}
}
