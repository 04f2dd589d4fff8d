package bugs

import "testing"

func TestRegistrySetAndHooks(t *testing.T) {
	r := NewRegistry()
	if len(r.Names()) != 7 {
		t.Fatalf("want 7 bugs, got %v", r.Names())
	}
	var got []string
	r.OnChange(func(name string, st State) { got = append(got, name) })
	v := 2.5
	st, err := r.Set(MemoryLeak, true, &v)
	if err != nil || !st.Enabled || st.Intensity != 2.5 {
		t.Fatalf("Set: %+v %v", st, err)
	}
	if _, err := r.Set("nope", true, nil); err == nil {
		t.Fatal("unknown bug accepted")
	}
	neg := -1.0
	if _, err := r.Set(MemoryLeak, true, &neg); err == nil {
		t.Fatal("negative intensity accepted")
	}
	if len(got) != 1 || got[0] != MemoryLeak {
		t.Fatalf("hooks: %v", got)
	}
	if !r.Get(MemoryLeak).Enabled() || r.Get(MapRace).Enabled() {
		t.Fatal("wrong enabled state")
	}
}

func TestParseFlag(t *testing.T) {
	n, v, err := ParseFlag("map_race=4")
	if err != nil || n != "map_race" || v == nil || *v != 4 {
		t.Fatalf("%v %v %v", n, v, err)
	}
	n, v, err = ParseFlag("map_race")
	if err != nil || n != "map_race" || v != nil {
		t.Fatalf("%v %v %v", n, v, err)
	}
	if _, _, err := ParseFlag("x=abc"); err == nil {
		t.Fatal("bad intensity accepted")
	}
}
