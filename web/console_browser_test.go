package web

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const chromium = "/usr/bin/chromium"

// runChromium runs headless Chromium (Debian's chromium package) with
// args, without the network chatter and first-run screens of a desktop
// browser, and returns its standard output.
func runChromium(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir=" + t.TempDir()}
	cmd := exec.CommandContext(ctx, chromium, append(base, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium %v: %v\n%s", args, err, stderr.String())
	}
	return string(out)
}

// TestConsoleInChromium opens the console in a real browser, with the
// token given the only way a browser can (?token=), reads the page it
// built and saves a screenshot: under -artifacts (go test -artifacts
// -outputdir DIR) or $MG_ARTEFACTS.
func TestConsoleInChromium(t *testing.T) {
	if os.Getenv("MG_INTEGRATION") != "1" {
		t.Skip("set MG_INTEGRATION=1 to open the console in headless Chromium")
	}
	if _, err := os.Stat(chromium); err != nil {
		t.Skip("no " + chromium + ": apt-get install -y chromium")
	}
	const token = "browser-token-0123456789"
	url := serve(t, consoleServer(t, token)) + "/?token=" + token

	dom := runChromium(t, "--dump-dom", url)
	for _, want := range consoleTexts {
		if !strings.Contains(dom, want) {
			t.Errorf("Chromium's page lacks %q:\n%s", want, dom)
		}
	}
	if !strings.Contains(dom, "<meter") {
		t.Errorf("Chromium's page has no quota bar:\n%s", dom)
	}

	dir := os.Getenv("MG_ARTEFACTS")
	if dir == "" {
		dir = t.ArtifactDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	shot := filepath.Join(dir, "console.png")
	runChromium(t, "--screenshot="+shot, "--window-size=1280,900", "--hide-scrollbars", url)
	b, err := os.ReadFile(shot)
	if err != nil || len(b) < 8 || string(b[1:4]) != "PNG" {
		t.Fatalf("no PNG screenshot at %s: %v", shot, err)
	}
	t.Logf("screenshot: %s (%d bytes)", shot, len(b))
}
