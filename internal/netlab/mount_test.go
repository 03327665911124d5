package netlab

import (
	"strings"
	"testing"
)

func TestIsMountPoint(t *testing.T) {
	const table = `27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
45 27 0:4 net:[4026532506] /run/netns/nl-40899a-lana rw - nsfs nsfs rw
60 27 0:5 / /run/net\040ns rw - tmpfs tmpfs rw
`
	for dir, want := range map[string]bool{"/run/netns": false, "/run/netns/nl-40899a-lana": true, "/run/net ns": true, "/": true, "/run": false} {
		got, err := isMountPoint(strings.NewReader(table), dir)
		if err != nil || got != want {
			t.Errorf("isMountPoint(%q) = %v, %v; want %v", dir, got, err, want)
		}
	}
	got, err := isMountPoint(strings.NewReader(table+"55 27 254:0 /run/netns /run/netns rw shared:1 - ext4 /dev/vda rw\n"), "/run/netns")
	if err != nil || !got {
		t.Errorf("with /run/netns bound onto itself: %v, %v; want true", got, err)
	}
}
