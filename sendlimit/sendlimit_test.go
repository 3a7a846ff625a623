package sendlimit

import "testing"

func TestDefaults(t *testing.T) {
	if got, want := Gmail().String(), "500 messages a day, 100 recipients per message"; got != want {
		t.Errorf("Gmail() = %q, want %q", got, want)
	}
	if got, want := Workspace().String(), "2000 messages a day, 10000 recipients a day, 3000 external recipients a day, 100 recipients per message"; got != want {
		t.Errorf("Workspace() = %q, want %q", got, want)
	}
}

// The warning starts at the first whole message at or past the share, the
// same figure everywhere it is shown: the demo's 3 a day at 0.6 warns at
// the 2nd message, not the 1st.
func TestWarnAt(t *testing.T) {
	for _, c := range []struct {
		limit int
		frac  float64
		want  int
	}{{3, 0.6, 2}, {10, 0.9, 9}, {500, 0.9, 450}, {2000, 0.6, 1200}, {10, 0.85, 9}, {0, 0.9, 0}, {500, 0, 0}} {
		if got := WarnAt(c.limit, c.frac); got != c.want {
			t.Errorf("WarnAt(%d, %v) = %d, want %d", c.limit, c.frac, got, c.want)
		}
	}
}
