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
