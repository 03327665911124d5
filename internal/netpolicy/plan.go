package netpolicy

import "strings"

// Plan is what Apply would make the host look like, next to what is live.
// Both texts hold the nftables table in nft's layout, then the routes and
// policy rules, one per line.
type Plan struct {
	Desired string
	Live    string
}

// Changed reports whether Apply would change anything.
func (p Plan) Changed() bool { return p.Desired != p.Live }

// Diff is a line diff from Live to Desired: "- " lines would be removed,
// "+ " lines added, "  " lines stay.
func (p Plan) Diff() string { return lineDiff(p.Live, p.Desired) }

func splitLines(s string) []string {
	s = strings.TrimSuffix(s, "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// lineDiff is a longest-common-subsequence diff; rulesets are a few hundred
// lines, so the quadratic table is small. Past maxCells it degrades to
// "remove all, add all", still correct.
func lineDiff(from, to string) string {
	const maxCells = 4 << 20
	a, b := splitLines(from), splitLines(to)
	var out strings.Builder
	emit := func(prefix, line string) { out.WriteString(prefix + line + "\n") }
	if len(a)*len(b) > maxCells {
		for _, l := range a {
			emit("- ", l)
		}
		for _, l := range b {
			emit("+ ", l)
		}
		return out.String()
	}
	// lcs[i][j] = LCS length of a[i:], b[j:].
	lcs := make([][]int, len(a)+1)
	for i := range lcs {
		lcs[i] = make([]int, len(b)+1)
	}
	for i := len(a) - 1; i >= 0; i-- {
		for j := len(b) - 1; j >= 0; j-- {
			if a[i] == b[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		switch {
		case a[i] == b[j]:
			emit("  ", a[i])
			i++
			j++
		case lcs[i+1][j] >= lcs[i][j+1]:
			emit("- ", a[i])
			i++
		default:
			emit("+ ", b[j])
			j++
		}
	}
	for ; i < len(a); i++ {
		emit("- ", a[i])
	}
	for ; j < len(b); j++ {
		emit("+ ", b[j])
	}
	return out.String()
}
