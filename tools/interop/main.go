// SPDX-License-Identifier: MIT

// Command kderp-interop checks a DERP server with Tailscale's own Go client
// (tailscale.com/derp/derphttp). Each case connects fresh clients, drives one
// behaviour and prints KTAP: "ok N case" or "not ok N case # reason", with
// diagnostics on "# " lines. Exit status: 0 all passed, 1 a case failed,
// 4 every case was skipped, 2 usage error.
//
//	kderp-interop -url http://127.0.0.1:3340/derp all
//	kderp-interop -url https://derp1.test:8443/derp -ip 127.0.0.1 -ca derp1.test.crt faststart
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"tailscale.com/derp/derphttp"
	"tailscale.com/net/netmon"
	"tailscale.com/tailcfg"
	"tailscale.com/types/key"
)

// errSkip marks a case that does not apply to the chosen transport.
type errSkip struct{ why string }

func (e errSkip) Error() string { return e.why }

type testCase struct {
	name string
	desc string
	run  func(ctx context.Context, e *env) error
}

// longCases have their own timeout where it is longer than -timeout.
var longCases = map[string]time.Duration{"keepalive": 80 * time.Second}

var cases = []testCase{
	{"sendrecv", "A->B and B->A with 1, 1200 and 65536 byte payloads", caseSendRecv},
	{"three", "0->1 and 1->2 with nothing leaking to anyone else", caseThree},
	{"ping", "derphttp Client.Ping gets a Pong", casePing},
	{"peergone", "peer that disconnects is reported as PeerGone(Disconnected)", casePeerGone},
	{"peergone-scope", "PeerGone goes only to clients that received from the peer",
		casePeerGoneScope},
	{"nothere", "disco to an unknown key gets rate-limited PeerGone(NotHere)", caseNotHere},
	{"upgrade", "raw HTTP upgrade: 101, ServerKey, then ServerInfo", caseUpgrade},
	{"order", "10000 packets A->B arrive in order, none lost", caseOrder},
	{"bulk", "400 packets of 64 KiB A->B, in order and intact", caseBulk},
	{"early", "NotePreferred and a packet right behind ClientInfo; ServerInfo still first",
		caseEarly},
	{"http", "latency-check, probe, generate_204 challenge, 426 for /derp", caseHTTP},
	{"frames", "unknown frames, a client Pong and NotePreferred are skipped", caseFrames},
	{"slowpeer", "a peer that stops reading blocks nobody and gets disconnected",
		caseSlowPeer},
	{"self", "a packet to one's own key comes back", caseSelf},
	{"dupkey", "two connections with one key: newest or last sender receives", caseDupKey},
	{"reconnect", "a client leaves and comes back with the same key", caseReconnect},
	{"many", "16 (-clients) clients all to all for 10 rounds", caseMany},
	{"watch", "mesh watcher sees PeerPresent/PeerGone; non-mesh watcher is cut (-meshkey)",
		caseWatch},
	{"meshframes", "ForwardPacket and ClosePeer from a mesh peer; refused without the key",
		caseMeshFrames},
	{"presentflags", "PeerPresent flags: mesh peer, prober, not-ideal node (-meshkey)",
		casePresentFlags},
	{"keepalive", "an idle client gets a KeepAlive within 70 s (takes about a minute)",
		caseKeepAlive},
	{"tlsversion", "the TLS version is the one given by -tls-version (TLS only)",
		caseTLSVersion},
	{"faststart", "TLS 1.3 meta cert and Derp-Fast-Start: 1 (TLS only)", caseFastStart},
	{"stun", "net/stun request gets our address back (-stun)", caseSTUN},
	{"stunignored", "a non-Tailscale STUN request gets no answer (-stun)", caseSTUNIgnored},
	{"untrusted", "a client that does not trust the cert cannot connect (TLS only)",
		caseUntrusted},
}

// env is what every case needs to build clients for the server under test.
type env struct {
	url     *url.URL
	ip      string         // dial this instead of resolving the URL host (TLS)
	roots   *x509.CertPool // trusted roots for TLS, nil for plain HTTP
	logf    func(format string, args ...any)
	netMon  *netmon.Monitor
	meshKey key.DERPMesh  // the server's mesh key, for the watch case
	tlsVer  uint16        // expected TLS version, 0 = not checked
	packets int           // packet count for the order case
	clients int           // client count for the many case
	window  int           // packets in flight in the order case, 0 = unlimited
	caseTO  time.Duration // per case timeout
	// STUN cases: server address and, if set, the address it must report.
	stunAddr string
	stunWant string
}

func (e *env) tls() bool { return e.url.Scheme == "https" }

func (e *env) port() int {
	p, err := strconv.Atoi(e.url.Port())
	if err != nil {
		if e.tls() {
			return 443
		}
		return 80
	}
	return p
}

// dialAddr is the TCP address raw (non-derphttp) connections dial.
func (e *env) dialAddr() string {
	host := e.url.Hostname()
	if e.ip != "" {
		host = e.ip
	}
	return net.JoinHostPort(host, strconv.Itoa(e.port()))
}

// newClient returns a derphttp client for priv. Over TLS with an IP override
// it is a region client with one node, as tailscaled builds them from a DERP
// map; otherwise a URL client. Only RootCAs is set in its TLS config.
func (e *env) newClient(priv key.NodePrivate) (*derphttp.Client, error) {
	var c *derphttp.Client
	if e.tls() && e.ip != "" {
		c = e.newRegionClient(priv, e.node("900a", e.port()))
	} else {
		var err error
		c, err = derphttp.NewClient(priv, e.url.String(), e.logf, e.netMon)
		if err != nil {
			return nil, err
		}
	}
	if e.roots != nil {
		c.TLSConfig = &tls.Config{RootCAs: e.roots}
	}
	return c, nil
}

// node is a DERP map entry for the server under test, reached on port.
func (e *env) node(name string, port int) *tailcfg.DERPNode {
	return &tailcfg.DERPNode{
		Name:     name,
		RegionID: 900,
		HostName: e.url.Hostname(),
		IPv4:     e.ip,
		IPv6:     "none",
		DERPPort: port,
		STUNPort: -1,
	}
}

// newRegionClient is a TLS client for region 900 made of nodes, tried in
// order, trusting only e.roots.
func (e *env) newRegionClient(priv key.NodePrivate, nodes ...*tailcfg.DERPNode) *derphttp.Client {
	region := &tailcfg.DERPRegion{
		RegionID:   900,
		RegionCode: "kderp",
		RegionName: "kderp interop",
		Nodes:      nodes,
	}
	c := derphttp.NewRegionClient(priv, e.logf, e.netMon,
		func() *tailcfg.DERPRegion { return region })
	c.TLSConfig = &tls.Config{RootCAs: e.roots}
	return c
}

func loadRoots(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate", path)
	}
	return pool, nil
}

func usage() {
	w := flag.CommandLine.Output()
	fmt.Fprintf(w, "usage: %s [flags] case... | all\n\ncases:\n", os.Args[0])
	for _, c := range cases {
		fmt.Fprintf(w, "  %-14s %s\n", c.name, c.desc)
	}
	fmt.Fprintf(w, "\nflags:\n")
	flag.PrintDefaults()
}

func main() {
	rawURL := flag.String("url", "", "DERP URL, http://IP:PORT/derp or https://NAME:PORT/derp")
	ip := flag.String("ip", "", "IPv4 address to dial instead of resolving the URL host")
	ca := flag.String("ca", "", "PEM file with the certificate (or CA) to trust for TLS")
	tlsVer := flag.String("tls-version", "", "TLS version the server must negotiate: 1.2 or 1.3")
	meshFile := flag.String("meshkey", "", "file with the server's mesh key (64 hex digits)")
	timeout := flag.Duration("timeout", 20*time.Second, "timeout of each case")
	packets := flag.Int("packets", 10000, "number of packets in the order case")
	clients := flag.Int("clients", 16, "number of clients in the many case (2..1000)")
	window := flag.Int("window", 16,
		"packets in flight in the order case (below the server's queue depth), 0 = no limit")
	verbose := flag.Bool("v", false, "log derphttp client messages to stderr")
	stunAddr := flag.String("stun", "", "STUN server HOST:PORT for the stun cases")
	stunWant := flag.String("stun-want", "", "address the STUN server must report (stun case)")
	flag.Usage = usage
	flag.Parse()

	if flag.NArg() == 0 || (*rawURL == "" && *stunAddr == "") {
		usage()
		os.Exit(2)
	}
	if *rawURL == "" {
		// STUN only: no DERP URL needed.
		*rawURL = "http://127.0.0.1:1/derp"
	}
	u, err := url.Parse(*rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		fmt.Fprintf(os.Stderr, "kderp-interop: bad -url %q\n", *rawURL)
		os.Exit(2)
	}
	e := &env{
		url:     u,
		ip:      *ip,
		netMon:  netmon.NewStatic(),
		packets: *packets,
		clients: min(max(*clients, 2), 1000),
		window:  *window,
		caseTO:  *timeout,
		logf:    func(string, ...any) {},

		stunAddr: *stunAddr,
		stunWant: *stunWant,
	}
	if *verbose {
		l := log.New(os.Stderr, "derphttp: ", log.Lmicroseconds)
		e.logf = l.Printf
	} else {
		// tlsdial reports verification failures through package log.
		log.SetOutput(io.Discard)
	}
	if *ca != "" {
		if e.roots, err = loadRoots(*ca); err != nil {
			fmt.Fprintf(os.Stderr, "kderp-interop: %v\n", err)
			os.Exit(2)
		}
	}
	if *meshFile != "" {
		b, err := os.ReadFile(*meshFile)
		if err == nil {
			e.meshKey, err = key.ParseDERPMesh(strings.TrimSpace(string(b)))
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "kderp-interop: -meshkey: %v\n", err)
			os.Exit(2)
		}
	}
	switch *tlsVer {
	case "":
	case "1.2":
		e.tlsVer = tls.VersionTLS12
	case "1.3":
		e.tlsVer = tls.VersionTLS13
	default:
		fmt.Fprintf(os.Stderr, "kderp-interop: -tls-version must be 1.2 or 1.3\n")
		os.Exit(2)
	}
	if e.tls() && e.roots == nil {
		fmt.Fprintf(os.Stderr, "kderp-interop: https needs -ca\n")
		os.Exit(2)
	}

	var todo []testCase
	for _, name := range flag.Args() {
		if name == "all" {
			todo = append(todo, cases...)
			continue
		}
		found := false
		for _, c := range cases {
			if c.name == name {
				todo = append(todo, c)
				found = true
			}
		}
		if !found {
			fmt.Fprintf(os.Stderr, "kderp-interop: unknown case %q\n", name)
			os.Exit(2)
		}
	}
	os.Exit(runCases(e, todo, os.Stdout))
}

// runCases runs each case under its own timeout and prints KTAP.
func runCases(e *env, todo []testCase, w io.Writer) int {
	fmt.Fprintf(w, "TAP version 13\n1..%d\n", len(todo))
	failed, skipped := 0, 0
	for i, c := range todo {
		start := time.Now()
		err := runOne(e, c)
		dur := time.Since(start).Round(time.Millisecond)
		var skip errSkip
		switch {
		case err == nil:
			fmt.Fprintf(w, "ok %d %s (%v)\n", i+1, c.name, dur)
		case errors.As(err, &skip):
			skipped++
			fmt.Fprintf(w, "ok %d %s # SKIP %s\n", i+1, c.name, skip.why)
		default:
			failed++
			lines := strings.Split(err.Error(), "\n")
			if len(lines) > 10 {
				lines = append(lines[:10], "...")
			}
			for _, line := range lines {
				fmt.Fprintf(w, "# %s: %s\n", c.name, line)
			}
			fmt.Fprintf(w, "not ok %d %s # after %v\n", i+1, c.name, dur)
		}
	}
	fmt.Fprintf(w, "# Totals: pass:%d fail:%d skip:%d\n", len(todo)-failed-skipped, failed, skipped)
	switch {
	case failed > 0:
		return 1
	case skipped == len(todo):
		return 4
	}
	return 0
}

// runOne runs a case with a deadline. A case that ignores its context is
// abandoned when the deadline passes plus a grace period.
func runOne(e *env, c testCase) error {
	to := max(e.caseTO, longCases[c.name])
	ctx, cancel := context.WithTimeout(context.Background(), to)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.run(ctx, e) }()
	select {
	case err := <-done:
		if err != nil && ctx.Err() != nil {
			err = fmt.Errorf("timed out after %v: %w", to, err)
		}
		return err
	case <-time.After(to + 5*time.Second):
		return fmt.Errorf("case did not finish within %v", to+5*time.Second)
	}
}
