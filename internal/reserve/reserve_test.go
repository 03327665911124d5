package reserve

import "testing"

func TestMap(t *testing.T) {
	m := map[int]string{1: "a", 2: "b"}
	if r := Map(m, 2); len(r) != 2 {
		t.Fatalf("room for as many as it holds: %v", r)
	} else {
		r[3] = "c"
		if len(m) != 3 {
			t.Error("a map with room enough was copied")
		}
	}
	r := Map(m, 100)
	r[4] = "d"
	if len(m) != 3 || len(r) != 4 || r[1] != "a" || r[3] != "c" {
		t.Errorf("reserved %v from %v: want a copy with every entry", r, m)
	}
	if r := Map[int, int](nil, 10); r == nil {
		t.Error("a nil map with room to make stays nil")
	}
}
