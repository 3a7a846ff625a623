package accounts

import (
	"testing"

	"github.com/mailgate/mailgate/sendlimit"
)

func TestParseFallback(t *testing.T) {
	for _, f := range []Fallback{FallbackDefault, FallbackDirect, FallbackRewriteFrom, FallbackDefer} {
		got, err := ParseFallback(f.String())
		if err != nil || got != f {
			t.Errorf("ParseFallback(%q) = %q, %v; want %q", f.String(), got, err, f)
		}
	}
	if got, err := ParseFallback(""); err != nil || got != FallbackDefault {
		t.Errorf(`ParseFallback("") = %q, %v; want the default`, got, err)
	}
	if _, err := ParseFallback("sideways"); err == nil {
		t.Error(`ParseFallback("sideways") accepted`)
	}
}

func TestKindDefaultLimits(t *testing.T) {
	if got := KindGmail.DefaultLimits(); got.Messages != sendlimit.GmailMessages || got.Recipients != 0 {
		t.Errorf("gmail limits %+v, want %d messages and no recipient count", got, sendlimit.GmailMessages)
	}
	if got := KindWorkspace.DefaultLimits(); got != sendlimit.Workspace() {
		t.Errorf("workspace limits %+v, want %+v", got, sendlimit.Workspace())
	}
}
