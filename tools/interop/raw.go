// SPDX-License-Identifier: MIT

package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"go4.org/mem"
	"tailscale.com/derp"
	"tailscale.com/types/key"
)

// These cases speak the HTTP upgrade themselves (with the derp package for
// the DERP framing) so they can see what derphttp hides: the 101 response,
// and which bytes the server writes first after a fast-start request.

// recorder keeps a copy of the first max bytes read through it.
type recorder struct {
	r   io.Reader
	max int
	mu  sync.Mutex
	buf []byte
}

func (r *recorder) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.mu.Lock()
	if room := r.max - len(r.buf); room > 0 {
		r.buf = append(r.buf, p[:min(n, room)]...)
	}
	r.mu.Unlock()
	return n, err
}

func (r *recorder) bytes() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Clone(r.buf)
}

// rawDial opens a TCP (and for https a verified TLS) connection to the
// server. It is closed when ctx ends.
func (e *env) rawDial(ctx context.Context) (net.Conn, *tls.ConnectionState, error) {
	var d net.Dialer
	tc, err := d.DialContext(ctx, "tcp", e.dialAddr())
	if err != nil {
		return nil, nil, err
	}
	context.AfterFunc(ctx, func() { tc.Close() })
	if !e.tls() {
		return tc, nil, nil
	}
	conn := tls.Client(tc, &tls.Config{RootCAs: e.roots, ServerName: e.url.Hostname()})
	if err := conn.HandshakeContext(ctx); err != nil {
		tc.Close()
		return nil, nil, fmt.Errorf("TLS handshake: %w", err)
	}
	cs := conn.ConnectionState()
	return conn, &cs, nil
}

func (e *env) upgradeRequest(fastStart bool) *http.Request {
	req, _ := http.NewRequest("GET", e.url.String(), nil)
	req.Header.Set("Upgrade", "DERP")
	req.Header.Set("Connection", "Upgrade")
	if fastStart {
		req.Header.Set(derp.FastStartHeader, "1")
	}
	return req
}

func (e *env) derpLogf() func(string, ...any) { return e.logf }

// rawClient is a DERP connection set up by hand: the HTTP upgrade here, the
// DERP handshake by the derp package. bw writes frames on the same stream.
type rawClient struct {
	conn net.Conn
	dc   *derp.Client
	bw   *bufio.Writer
	priv key.NodePrivate
	resp *http.Response
}

func (r *rawClient) peer(name string) *peer { return &peer{name: name, pub: r.priv.Public()} }

// rawConnect does the classic exchange: request, 101, ServerKey frame,
// ClientInfo, then ServerInfo as the first message. The connection is
// closed when ctx ends.
func rawConnect(ctx context.Context, e *env) (*rawClient, error) {
	conn, _, err := e.rawDial(ctx)
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	r := &rawClient{conn: conn, priv: key.NewNode(), bw: bufio.NewWriter(conn)}
	br := bufio.NewReader(conn)
	req := e.upgradeRequest(false)
	if err := req.Write(r.bw); err != nil {
		conn.Close()
		return nil, err
	}
	if err := r.bw.Flush(); err != nil {
		conn.Close()
		return nil, fmt.Errorf("write request: %w", err)
	}
	if r.resp, err = http.ReadResponse(br, req); err != nil {
		conn.Close()
		return nil, fmt.Errorf("read response: %w", err)
	}
	if r.resp.StatusCode != http.StatusSwitchingProtocols {
		conn.Close()
		return nil, fmt.Errorf("status %q, want 101", r.resp.Status)
	}
	r.dc, err = derp.NewClient(r.priv, conn, bufio.NewReadWriter(br, r.bw), e.derpLogf(),
		derp.CanAckPings(true))
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("DERP handshake (ServerKey frame, ClientInfo): %w", err)
	}
	m, err := r.dc.Recv()
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("waiting for ServerInfo: %w", err)
	}
	if _, ok := m.(derp.ServerInfoMessage); !ok {
		conn.Close()
		return nil, fmt.Errorf("first message is %s, want ServerInfo", describe(m))
	}
	return r, nil
}

// caseUpgrade checks the 101 response headers against the ServerKey frame.
func caseUpgrade(ctx context.Context, e *env) error {
	r, err := rawConnect(ctx, e)
	if err != nil {
		return err
	}
	defer r.conn.Close()
	if v := r.resp.Header.Get("Derp-Version"); v != "2" {
		fmt.Printf("# upgrade: note: Derp-Version header %q (Go derper sends \"2\")\n", v)
	}
	hdr := r.resp.Header.Get("Derp-Public-Key")
	if hdr != r.dc.ServerPublicKey().UntypedHexString() {
		return fmt.Errorf("Derp-Public-Key header %.8s... does not match the ServerKey frame %s",
			hdr, r.dc.ServerPublicKey().ShortString())
	}
	return nil
}

// caseFrames: frames the server has no use for (unassigned types, a client
// Pong, a 300 KB unknown frame, NotePreferred) are skipped, and the
// connection keeps relaying both ways.
func caseFrames(ctx context.Context, e *env) error {
	r, err := rawConnect(ctx, e)
	if err != nil {
		return err
	}
	defer r.conn.Close()
	b, err := connectPeer(ctx, e, "B")
	if err != nil {
		return err
	}
	defer b.close()
	frames := []struct {
		t derp.FrameType
		b []byte
	}{
		{0x0b, nil},
		{0x20, randBytes(1000)},
		{derp.FramePong, randBytes(8)},
		{derp.FrameNotePreferred, []byte{1}},
		{0x7f, randBytes(300000)},
		{0xff, randBytes(17)},
	}
	for _, f := range frames {
		if err := derp.WriteFrame(r.bw, f.t, f.b); err != nil {
			return fmt.Errorf("write frame %#02x: %w", byte(f.t), err)
		}
	}
	if err := r.bw.Flush(); err != nil {
		return fmt.Errorf("write frames: %w", err)
	}
	data := plainPacket(700)
	if err := r.dc.Send(b.pub, data); err != nil {
		return fmt.Errorf("R: send: %w", err)
	}
	if err := b.expectPacket(ctx, r.peer("R"), data); err != nil {
		return fmt.Errorf("%w (after unknown frames from R)", err)
	}
	back := plainPacket(300)
	if err := b.c.Send(r.priv.Public(), back); err != nil {
		return fmt.Errorf("B: send: %w", err)
	}
	for {
		m, err := r.dc.Recv()
		if err != nil {
			return fmt.Errorf("R: waiting for B's packet: %w", err)
		}
		if _, ok := m.(derp.KeepAliveMessage); ok {
			continue
		}
		rp, ok := m.(derp.ReceivedPacket)
		if !ok || rp.Source != b.pub || !bytes.Equal(rp.Data, back) {
			return fmt.Errorf("R: got %s, want B's 300-byte packet", describe(m))
		}
		return nil
	}
}

// findMetaCert returns the server key and protocol version carried by the
// "derpkey<hex>" certificate the server appends after its chain.
func findMetaCert(certs []*x509.Certificate) (key.NodePublic, int, int, bool) {
	for i, c := range certs {
		hexKey, ok := strings.CutPrefix(c.Subject.CommonName, "derpkey")
		if !ok {
			continue
		}
		k, err := key.ParseNodePublicUntyped(mem.S(hexKey))
		if err != nil || c.SerialNumber.BitLen() > 8 {
			continue
		}
		return k, int(c.SerialNumber.Int64()), i, true
	}
	return key.NodePublic{}, 0, 0, false
}

// caseFastStart checks the TLS 1.3 fast-start path twice: through derphttp
// (which takes it by itself when it finds the meta cert), and by hand, where
// the first bytes the server writes must be the ServerKey frame, not an
// HTTP response.
func caseFastStart(ctx context.Context, e *env) error {
	if !e.tls() {
		return errSkip{"fast start needs TLS 1.3"}
	}
	f, err := connectPeer(ctx, e, "F")
	if err != nil {
		return err
	}
	defer f.close()
	cs, ok := f.c.TLSConnectionState()
	if !ok || cs == nil {
		return fmt.Errorf("F: derphttp reports no TLS connection state")
	}
	if cs.Version != tls.VersionTLS13 {
		return fmt.Errorf("F: negotiated %s, want TLS 1.3", tls.VersionName(cs.Version))
	}
	metaPub, ver, idx, ok := findMetaCert(cs.PeerCertificates)
	if !ok {
		return fmt.Errorf("F: no derpkey meta certificate among the %d certificates",
			len(cs.PeerCertificates))
	}
	if ver == 0 {
		return fmt.Errorf("F: meta certificate serial 0: clients will not fast start")
	}
	if idx != len(cs.PeerCertificates)-1 {
		return fmt.Errorf("F: meta certificate is #%d of %d, want it after the chain",
			idx+1, len(cs.PeerCertificates))
	}
	if f.c.ServerPublicKey() != metaPub {
		return fmt.Errorf("F: meta cert key %s differs from the server key %s",
			metaPub.ShortString(), f.c.ServerPublicKey().ShortString())
	}
	fmt.Printf("# faststart: TLS 1.3, %d certificates, meta cert version %d for key %s\n",
		len(cs.PeerCertificates), ver, metaPub.ShortString())

	// The same by hand, watching the first bytes from the server.
	conn, rcs, err := e.rawDial(ctx)
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	defer conn.Close()
	rawPub, _, _, ok := findMetaCert(rcs.PeerCertificates)
	if !ok || rawPub != metaPub {
		return fmt.Errorf("second TLS connection shows no or another meta certificate")
	}
	rec := &recorder{r: conn, max: 64}
	br, bw := bufio.NewReader(rec), bufio.NewWriter(conn)
	if err := e.upgradeRequest(true).Write(bw); err != nil {
		return err
	}
	priv := key.NewNode()
	// Writes ClientInfo right behind the request and flushes both.
	dc, err := derp.NewClient(priv, conn, bufio.NewReadWriter(br, bw), e.derpLogf(),
		derp.ServerPublicKey(rawPub), derp.CanAckPings(true))
	if err != nil {
		return fmt.Errorf("fast-start ClientInfo: %w", err)
	}
	type res struct {
		m   derp.ReceivedMessage
		err error
	}
	rc := make(chan res, 1)
	go func() {
		m, err := dc.Recv()
		rc <- res{m, err}
	}()
	var r res
	select {
	case r = <-rc:
	case <-time.After(5 * time.Second):
		r.err = fmt.Errorf("no ServerInfo within 5s")
	}
	first := rec.bytes()
	if bytes.HasPrefix(first, []byte("HTTP/")) {
		line, _, _ := bytes.Cut(first, []byte("\r\n"))
		return fmt.Errorf("server answered Derp-Fast-Start: 1 with %q", line)
	}
	if len(first) < 45 || first[0] != 0x01 || binary.BigEndian.Uint32(first[1:5]) < 40 ||
		string(first[5:13]) != derp.Magic {
		return fmt.Errorf("first bytes from the server are not a ServerKey frame: % x",
			first[:min(len(first), 16)])
	}
	if !bytes.Equal(first[13:45], rawPub.AppendTo(nil)) {
		return fmt.Errorf("ServerKey frame key differs from the meta certificate key")
	}
	if r.err != nil {
		return fmt.Errorf("fast-start client: %w", r.err)
	}
	if _, ok := r.m.(derp.ServerInfoMessage); !ok {
		return fmt.Errorf("fast-start client: first message %s, want ServerInfo", describe(r.m))
	}

	// And the fast-started connection carries packets.
	data := plainPacket(300)
	if err := dc.Send(f.pub, data); err != nil {
		return fmt.Errorf("fast-start client: send: %w", err)
	}
	return f.expectPacket(ctx, &peer{name: "fast-start client", pub: priv.Public()}, data)
}

// caseTLSVersion: derphttp negotiates the expected TLS version and the
// connection carries a packet.
func caseTLSVersion(ctx context.Context, e *env) error {
	if !e.tls() {
		return errSkip{"no TLS"}
	}
	if e.tlsVer == 0 {
		return errSkip{"no -tls-version"}
	}
	ps, err := connectPeers(ctx, e, "A", "B")
	if err != nil {
		return err
	}
	defer closeAll(ps)
	for _, p := range ps {
		cs, ok := p.c.TLSConnectionState()
		if !ok || cs == nil {
			return fmt.Errorf("%s: derphttp reports no TLS connection state", p.name)
		}
		if cs.Version != e.tlsVer {
			return fmt.Errorf("%s: negotiated %s, want %s", p.name,
				tls.VersionName(cs.Version), tls.VersionName(e.tlsVer))
		}
	}
	fmt.Printf("# tlsversion: %s\n", tls.VersionName(e.tlsVer))
	return exchange(ctx, ps[0], ps[1])
}

// caseUntrusted: a client that trusts another certificate for the same name
// must fail the TLS handshake (the other cases do not just skip
// verification).
func caseUntrusted(ctx context.Context, e *env) error {
	if !e.tls() {
		return errSkip{"no TLS"}
	}
	other, err := selfSigned(e.url.Hostname())
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AddCert(other)
	c, err := e.newClient(key.NewNode())
	if err != nil {
		return err
	}
	defer c.Close()
	c.TLSConfig = &tls.Config{RootCAs: pool}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err = c.Connect(cctx)
	if err == nil {
		return fmt.Errorf("connected although the server certificate is not trusted")
	}
	if !strings.Contains(err.Error(), "certificate") {
		return fmt.Errorf("connect failed, but not on the certificate: %w", err)
	}
	fmt.Printf("# untrusted: refused as expected\n")
	return nil
}

// selfSigned makes a throwaway self-signed certificate for name.
func selfSigned(name string) (*x509.Certificate, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		DNSNames:              []string{name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// caseHTTP: the plain HTTP endpoints Tailscale clients use besides /derp:
// netcheck's latency check, the probe path, the captive-portal check with
// its challenge, and /derp itself without an upgrade.
func caseHTTP(ctx context.Context, e *env) error {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, e.dialAddr())
		},
		TLSClientConfig: &tls.Config{RootCAs: e.roots, ServerName: e.url.Hostname()},
	}
	defer tr.CloseIdleConnections()
	hc := &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	base := e.url.Scheme + "://" + e.url.Host
	do := func(method, path string, hdr map[string]string) (*http.Response, error) {
		req, err := http.NewRequestWithContext(ctx, method, base+path, nil)
		if err != nil {
			return nil, err
		}
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := hc.Do(req)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", method, path, err)
		}
		io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
		resp.Body.Close()
		return resp, nil
	}
	checks := []struct {
		method, path string
		want         int
	}{
		{"GET", "/derp/latency-check", 200},
		{"HEAD", "/derp/probe", 200},
		{"GET", "/derp/probe", 200},
		{"GET", "/derp", http.StatusUpgradeRequired},
	}
	for _, c := range checks {
		resp, err := do(c.method, c.path, nil)
		if err != nil {
			return err
		}
		if resp.StatusCode != c.want {
			return fmt.Errorf("%s %s: status %q, want %d", c.method, c.path, resp.Status,
				c.want)
		}
	}
	challenge := "ts_" + e.url.Hostname()
	resp, err := do("GET", "/generate_204", map[string]string{"X-Tailscale-Challenge": challenge})
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusNoContent {
		return fmt.Errorf("GET /generate_204: status %q, want 204", resp.Status)
	}
	if got, want := resp.Header.Get("X-Tailscale-Response"), "response "+challenge; got != want {
		return fmt.Errorf("GET /generate_204: X-Tailscale-Response %q, want %q", got, want)
	}
	return nil
}

// holdWriter keeps what is written while hold is set, so that several
// flushes can go out in one write.
type holdWriter struct {
	w    io.Writer
	hold bool
	buf  bytes.Buffer
}

func (h *holdWriter) Write(p []byte) (int, error) {
	if h.hold {
		return h.buf.Write(p)
	}
	return h.w.Write(p)
}

func (h *holdWriter) release() error {
	h.hold = false
	_, err := h.w.Write(h.buf.Bytes())
	return err
}

// caseEarly: frames right behind ClientInfo, before the client has read
// anything (as tailscaled sends NotePreferred and its first packets): the
// server must still write ServerInfo first and then relay the packet.
// ClientInfo, NotePreferred and SendPacket go out in one write; over TLS 1.3
// with fast start the HTTP request does too.
func caseEarly(ctx context.Context, e *env) error {
	b, err := connectPeer(ctx, e, "B")
	if err != nil {
		return err
	}
	defer b.close()
	conn, cs, err := e.rawDial(ctx)
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	defer conn.Close()
	hw := &holdWriter{w: conn}
	br, bw := bufio.NewReader(conn), bufio.NewWriter(hw)
	opts := []derp.ClientOpt{derp.CanAckPings(true)}
	fast := false
	if cs != nil && cs.Version == tls.VersionTLS13 {
		if pub, ver, _, ok := findMetaCert(cs.PeerCertificates); ok && ver != 0 {
			opts = append(opts, derp.ServerPublicKey(pub))
			fast = true
		}
	}
	req := e.upgradeRequest(fast)
	hw.hold = fast
	if err := req.Write(bw); err != nil {
		return err
	}
	if !fast {
		if err := bw.Flush(); err != nil {
			return fmt.Errorf("write request: %w", err)
		}
		resp, err := http.ReadResponse(br, req)
		if err != nil {
			return fmt.Errorf("read response: %w", err)
		}
		if resp.StatusCode != http.StatusSwitchingProtocols {
			return fmt.Errorf("status %q, want 101", resp.Status)
		}
		// NewClient reads ServerKey, then ClientInfo and the rest are held.
		hw.hold = true
	}
	priv := key.NewNode()
	dc, err := derp.NewClient(priv, conn, bufio.NewReadWriter(br, bw), e.derpLogf(), opts...)
	if err != nil {
		return fmt.Errorf("handshake: %w", err)
	}
	data := plainPacket(250)
	if err := dc.NotePreferred(true); err != nil {
		return err
	}
	if err := dc.Send(b.pub, data); err != nil {
		return fmt.Errorf("early send: %w", err)
	}
	held := hw.buf.Len()
	if err := hw.release(); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	m, err := dc.Recv()
	if err != nil {
		return fmt.Errorf("waiting for ServerInfo: %w", err)
	}
	if _, ok := m.(derp.ServerInfoMessage); !ok {
		return fmt.Errorf("first message is %s, want ServerInfo", describe(m))
	}
	if err := b.expectPacket(ctx, &peer{name: "early client", pub: priv.Public()}, data); err != nil {
		return err
	}
	fmt.Printf("# early: fast start %v, %d bytes in one write\n", fast, held)
	return nil
}
