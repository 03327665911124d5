package agent

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"testing"
)

// exeRSS is the KiB of this process's own binary that are mapped, read-only
// mappings only (the ones releaseBinaryPages gives back).
func exeRSS(t *testing.T) int {
	t.Helper()
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var kb int
	var ours bool
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		switch {
		case len(fields) >= 5 && strings.Contains(fields[0], "-"):
			ours = len(fields) >= 6 && fields[5] == exe && !strings.Contains(fields[1], "w")
		case ours && len(fields) >= 2 && fields[0] == "Rss:":
			v, _ := strconv.Atoi(fields[1])
			kb += v
		}
	}
	return kb
}

func TestReleaseBinaryPages(t *testing.T) {
	before := exeRSS(t)
	if before < 2048 {
		t.Skipf("only %d KiB of the test binary mapped: nothing to give back", before)
	}
	releaseBinaryPages()
	after := exeRSS(t) // the code that runs from here on faults back in
	t.Logf("read-only pages of the binary mapped: %d KiB before, %d KiB after", before, after)
	if after > before/2 {
		t.Errorf("releaseBinaryPages left %d of %d KiB of the binary mapped; want at most half", after, before)
	}
	// Still runs: the pages come back from the page cache on use.
	if got := strings.Repeat("x", 3); got != "xxx" {
		t.Fatal(got)
	}
}
