// SPDX-License-Identifier: MIT

package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"tailscale.com/derp"
	"tailscale.com/derp/derphttp"
	"tailscale.com/types/key"
)

// caseSelf: a packet sent to one's own key comes back from oneself.
func caseSelf(ctx context.Context, e *env) error {
	a, err := connectPeer(ctx, e, "A")
	if err != nil {
		return err
	}
	defer a.close()
	data := plainPacket(500)
	if err := a.c.Send(a.pub, data); err != nil {
		return fmt.Errorf("A: send: %w", err)
	}
	if err := a.expectPacket(ctx, a, data); err != nil {
		return err
	}
	return a.expectQuiet(ctx, quiet)
}

// caseDupKey: two connections with the same key. The newest one receives;
// a connection that sends becomes the one that receives; closing one of the
// two tells nobody, closing the last one sends PeerGone.
func caseDupKey(ctx context.Context, e *env) error {
	ps, err := connectPeers(ctx, e, "B")
	if err != nil {
		return err
	}
	b := ps[0]
	defer b.close()
	k := key.NewNode()
	a1, err := connectPeerWith(ctx, e, "A1", k, nil)
	if err != nil {
		return err
	}
	defer a1.close()
	a2, err := connectPeerWith(ctx, e, "A2", k, nil)
	if err != nil {
		return err
	}
	defer a2.close()

	send := func(src, dst *peer, dstName string, to *peer) error {
		data := plainPacket(100)
		if err := src.c.Send(dst.pub, data); err != nil {
			return fmt.Errorf("%s: send: %w", src.name, err)
		}
		if err := to.expectPacket(ctx, src, data); err != nil {
			return fmt.Errorf("%w (packet for %s)", err, dstName)
		}
		return nil
	}
	// Newest connection wins.
	if err := send(b, a2, "A", a2); err != nil {
		return err
	}
	// A1 speaks, so A1 is now the active one.
	if err := send(a1, b, "B", b); err != nil {
		return err
	}
	if err := send(b, a1, "A", a1); err != nil {
		return err
	}
	a1.close()
	// A2 speaks: the only one left, and active again either way.
	if err := send(a2, b, "B", b); err != nil {
		return err
	}
	if err := send(b, a2, "A", a2); err != nil {
		return err
	}
	if err := b.expectQuiet(ctx, quiet); err != nil {
		return fmt.Errorf("%w (A still has a connection)", err)
	}
	a2.close()
	m, err := b.next(ctx)
	if err != nil {
		return fmt.Errorf("B: waiting for PeerGone(A) after its last connection closed: %w", err)
	}
	if pg, ok := m.(derp.PeerGoneMessage); !ok || pg.Peer != k.Public() ||
		pg.Reason != derp.PeerGoneReasonDisconnected {
		return fmt.Errorf("B: got %s, want PeerGone(A, reason 0x00)", describe(m))
	}
	return nil
}

// caseReconnect: a client goes away and comes back with the same key; the
// peer sees PeerGone, and both directions work again afterwards.
func caseReconnect(ctx context.Context, e *env) error {
	ps, err := connectPeers(ctx, e, "A", "B")
	if err != nil {
		return err
	}
	defer closeAll(ps)
	a, b := ps[0], ps[1]
	if err := exchange(ctx, a, b); err != nil {
		return err
	}
	a.close()
	m, err := b.next(ctx)
	if err != nil {
		return fmt.Errorf("B: waiting for PeerGone(A): %w", err)
	}
	if pg, ok := m.(derp.PeerGoneMessage); !ok || pg.Peer != a.pub {
		return fmt.Errorf("B: got %s, want PeerGone(A)", describe(m))
	}
	again, err := connectPeerWith(ctx, e, "A again", a.priv, nil)
	if err != nil {
		return err
	}
	defer again.close()
	if err := exchange(ctx, again, b); err != nil {
		return err
	}
	if err := b.expectQuiet(ctx, quiet); err != nil {
		return err
	}
	return again.expectQuiet(ctx, quiet)
}

// caseMany: e.clients clients (16), 10 rounds; in each round every client
// sends one packet to each of the others and every client must receive
// exactly one from each, with the right source and contents. With 16, at
// most 15 packets wait for any client, below the server's queue depth (more
// clients can overflow it legitimately).
func caseMany(ctx context.Context, e *env) error {
	n, rounds := e.clients, 10
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("M%d", i)
	}
	ps, err := connectPeers(ctx, e, names...)
	if err != nil {
		return err
	}
	defer closeAll(ps)
	idx := map[key.NodePublic]int{}
	for i, p := range ps {
		idx[p.pub] = i
	}
	tag := randBytes(8)
	tag[0] = 0
	mk := func(round, src, dst int) []byte {
		b := make([]byte, 64+src)
		copy(b, tag)
		binary.BigEndian.PutUint32(b[8:], uint32(round))
		binary.BigEndian.PutUint32(b[12:], uint32(src))
		binary.BigEndian.PutUint32(b[16:], uint32(dst))
		return b
	}
	start := time.Now()
	for r := 0; r < rounds; r++ {
		var wg sync.WaitGroup
		errs := make(chan error, 2*n)
		for i := range ps {
			wg.Add(2)
			go func(i int) {
				defer wg.Done()
				for j := range ps {
					if j == i {
						continue
					}
					if err := ps[i].c.Send(ps[j].pub, mk(r, i, j)); err != nil {
						errs <- fmt.Errorf("%s: send: %w", ps[i].name, err)
						return
					}
				}
			}(i)
			go func(j int) {
				defer wg.Done()
				seen := make([]bool, n)
				for got := 0; got < n-1; got++ {
					m, err := ps[j].next(ctx)
					if err != nil {
						errs <- fmt.Errorf("%s: round %d, %d of %d packets: %w",
							ps[j].name, r, got, n-1, err)
						return
					}
					rp, ok := m.(derp.ReceivedPacket)
					if !ok {
						errs <- fmt.Errorf("%s: round %d: unexpected %s",
							ps[j].name, r, describe(m))
						return
					}
					src, known := idx[rp.Source]
					if !known || src == j || seen[src] ||
						string(rp.Data) != string(mk(r, src, j)) {
						errs <- fmt.Errorf("%s: round %d: wrong, repeated or corrupted "+
							"packet from %s (%d bytes)", ps[j].name, r,
							rp.Source.ShortString(), len(rp.Data))
						return
					}
					seen[src] = true
				}
			}(i)
		}
		wg.Wait()
		select {
		case err := <-errs:
			return err
		default:
		}
	}
	dur := time.Since(start)
	fmt.Printf("# many: %d clients, %d packets in %v\n", n, n*(n-1)*rounds,
		dur.Round(time.Millisecond))
	for _, p := range ps {
		if err := p.expectQuiet(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
	return nil
}

// caseWatch: a mesh client (with the server's mesh key) that watches
// connections gets PeerPresent for the clients already there, itself
// included, then PeerPresent with address and flags for a new client and
// PeerGone(Disconnected) when it leaves. A client without the key that asks
// to watch is disconnected.
func caseWatch(ctx context.Context, e *env) error {
	if e.meshKey.IsZero() {
		return errSkip{"no -meshkey"}
	}
	c1, err := connectPeer(ctx, e, "C1")
	if err != nil {
		return err
	}
	defer c1.close()
	w, err := connectPeerWith(ctx, e, "W", key.NewNode(), func(c *derphttp.Client) {
		c.MeshKey = e.meshKey
		c.WatchConnectionChanges = true
	})
	if err != nil {
		return err
	}
	defer w.close()

	// The initial flood: every connected key, in no particular order.
	want := map[key.NodePublic]string{c1.pub: "C1", w.pub: "W"}
	for len(want) > 0 {
		m, err := w.next(ctx)
		if err != nil {
			return fmt.Errorf("W: waiting for PeerPresent of %d more: %w", len(want), err)
		}
		switch m := m.(type) {
		case derp.PeerPresentMessage:
			delete(want, m.Key)
		case derp.PeerGoneMessage:
			// A client of an earlier case going away.
		default:
			return fmt.Errorf("W: got %s while waiting for the initial PeerPresents",
				describe(m))
		}
	}

	c2, err := connectPeer(ctx, e, "C2")
	if err != nil {
		return err
	}
	defer c2.close()
	la, err := c2.c.LocalAddr()
	if err != nil {
		return fmt.Errorf("C2: local address: %w", err)
	}
	var pp derp.PeerPresentMessage
	for {
		m, err := w.next(ctx)
		if err != nil {
			return fmt.Errorf("W: waiting for PeerPresent(C2): %w", err)
		}
		// Other clients (the rest of the initial flood, clients of other
		// cases coming and going) may be reported in between.
		if pg, ok := m.(derp.PeerGoneMessage); ok && pg.Peer != c2.pub {
			continue
		}
		var ok bool
		if pp, ok = m.(derp.PeerPresentMessage); !ok {
			return fmt.Errorf("W: got %s, want PeerPresent(C2)", describe(m))
		}
		if pp.Key == c2.pub {
			break
		}
	}
	if pp.IPPort != la {
		return fmt.Errorf("W: PeerPresent(C2) address %v, want %v", pp.IPPort, la)
	}
	if pp.Flags != derp.PeerPresentIsRegular {
		return fmt.Errorf("W: PeerPresent(C2) flags %#02x, want 0x01 (regular)", pp.Flags)
	}
	c2.close()
	for {
		m, err := w.next(ctx)
		if err != nil {
			return fmt.Errorf("W: waiting for PeerGone(C2): %w", err)
		}
		if pp, ok := m.(derp.PeerPresentMessage); ok && pp.Key != c2.pub {
			continue
		}
		pg, ok := m.(derp.PeerGoneMessage)
		if !ok {
			return fmt.Errorf("W: got %s, want PeerGone(C2)", describe(m))
		}
		if pg.Peer != c2.pub {
			continue
		}
		if pg.Reason != derp.PeerGoneReasonDisconnected {
			return fmt.Errorf("W: %s, want reason 0x00", describe(m))
		}
		break
	}

	// Watching without the mesh key closes the connection.
	nctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	n, err := connectPeerWith(nctx, e, "N", key.NewNode(), func(c *derphttp.Client) {
		c.WatchConnectionChanges = true
	})
	if err != nil {
		// The server may close before or after writing ServerInfo.
		fmt.Printf("# watch: non-mesh watcher refused: %v\n", err)
		return nil
	}
	defer n.close()
	m, err := n.next(nctx)
	if err == nil {
		return fmt.Errorf("N: watching without the mesh key gave %s, want the connection closed",
			describe(m))
	}
	if nctx.Err() != nil {
		return fmt.Errorf("N: watching without the mesh key: connection still open after 5 s")
	}
	return nil
}

// caseSlowPeer: S connects and then stops reading. A floods S with 26 MB,
// far more than the socket buffers hold. A's sends must not stall, A and C
// must keep talking meanwhile, and the server must give up on S after its
// write timeout (2 s by default) and close it.
func caseSlowPeer(ctx context.Context, e *env) error {
	s, err := rawConnect(ctx, e)
	if err != nil {
		return fmt.Errorf("S: %w", err)
	}
	defer s.conn.Close()
	ps, err := connectPeers(ctx, e, "A", "C")
	if err != nil {
		return err
	}
	defer closeAll(ps)
	a, c := ps[0], ps[1]

	done := make(chan error, 1)
	go func() {
		for i := 0; i < 400; i++ {
			if err := a.c.Send(s.priv.Public(), plainPacket(derp.MaxPacketSize)); err != nil {
				done <- fmt.Errorf("A: send %d to S: %w", i, err)
				return
			}
		}
		done <- nil
	}()
	start := time.Now()
	select {
	case err := <-done:
		if err != nil {
			return err
		}
	case <-time.After(10 * time.Second):
		return fmt.Errorf("A: 400 sends to a peer that does not read still blocked after 10 s")
	case <-ctx.Done():
		return ctx.Err()
	}
	fmt.Printf("# slowpeer: A sent 26 MB to a stalled peer in %v\n",
		time.Since(start).Round(time.Millisecond))
	if err := exchange(ctx, a, c); err != nil {
		return fmt.Errorf("%w (while S is stalled)", err)
	}

	// Past the write timeout; then drain S and expect the end of it.
	time.Sleep(4 * time.Second)
	s.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := io.Copy(io.Discard, s.conn)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("S: still open 4 s after it stopped reading (%d bytes were queued)", n)
	}
	fmt.Printf("# slowpeer: S closed by the server after %d bytes (%v)\n", n, err)
	return nil
}

// casePresentFlags: the flags in PeerPresent say how each client connected:
// 0x02 mesh key (the watcher itself), 0x04 IsProber, 0x08 for a region
// client that reached the server as a node other than its region's first
// (TLS only: it sends Ideal-Node), combined when several apply.
func casePresentFlags(ctx context.Context, e *env) error {
	if e.meshKey.IsZero() {
		return errSkip{"no -meshkey"}
	}
	w, err := connectPeerWith(ctx, e, "W", key.NewNode(), func(c *derphttp.Client) {
		c.MeshKey = e.meshKey
		c.WatchConnectionChanges = true
	})
	if err != nil {
		return err
	}
	defer w.close()
	// present waits for PeerPresent(p) and checks its flags.
	present := func(name string, k key.NodePublic, want derp.PeerPresentFlags) error {
		for {
			m, err := w.next(ctx)
			if err != nil {
				return fmt.Errorf("W: waiting for PeerPresent(%s): %w", name, err)
			}
			switch m := m.(type) {
			case derp.PeerPresentMessage:
				if m.Key != k {
					continue // a client of an earlier case
				}
				if m.Flags != want {
					return fmt.Errorf("W: PeerPresent(%s) flags %#02x, want %#02x",
						name, m.Flags, want)
				}
				return nil
			case derp.PeerGoneMessage:
				continue
			default:
				return fmt.Errorf("W: got %s, want PeerPresent(%s)", describe(m), name)
			}
		}
	}
	if err := present("W itself", w.pub, derp.PeerPresentIsMeshPeer); err != nil {
		return err
	}
	clients := []struct {
		name  string
		setup func(*derphttp.Client)
		want  derp.PeerPresentFlags
	}{
		{"prober", func(c *derphttp.Client) { c.IsProber = true }, derp.PeerPresentIsProber},
		{"mesh prober", func(c *derphttp.Client) {
			c.IsProber = true
			c.MeshKey = e.meshKey
		}, derp.PeerPresentIsProber | derp.PeerPresentIsMeshPeer},
		{"regular", nil, derp.PeerPresentIsRegular},
	}
	for _, cl := range clients {
		p, err := connectPeerWith(ctx, e, cl.name, key.NewNode(), cl.setup)
		if err != nil {
			return err
		}
		err = present(cl.name, p.pub, cl.want)
		p.close()
		if err != nil {
			return err
		}
	}
	if !e.tls() || e.ip == "" {
		return nil
	}

	// A region whose first node refuses connections.
	l, err := net.Listen("tcp", net.JoinHostPort(e.ip, "0"))
	if err != nil {
		return err
	}
	dead := l.Addr().(*net.TCPAddr).Port
	l.Close()
	priv := key.NewNode()
	c := e.newRegionClient(priv, e.node("900dead", dead), e.node("900b", e.port()))
	defer c.Close()
	if err := c.Connect(ctx); err != nil {
		return fmt.Errorf("not-ideal client: connect: %w", err)
	}
	return present("not-ideal client", priv.Public(), derp.PeerPresentNotIdeal)
}

// expectClosed requires the server to close p's connection within 5 s,
// with no message other than KeepAlive before that.
func (p *peer) expectClosed(ctx context.Context, why string) error {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	m, err := p.next(cctx)
	switch {
	case err == nil:
		return fmt.Errorf("%s: got %s, want the connection closed (%s)", p.name,
			describe(m), why)
	case cctx.Err() != nil:
		return fmt.Errorf("%s: connection still open 5 s after %s", p.name, why)
	}
	return nil
}

// caseMeshFrames: the frames only mesh peers may send. ForwardPacket
// delivers with the embedded source key, answers a disco packet for an
// unknown key with PeerGone(NotHere) to the mesh peer, and ClosePeer closes
// the target's connection. A client without the mesh key that sends either
// frame is disconnected.
func caseMeshFrames(ctx context.Context, e *env) error {
	if e.meshKey.IsZero() {
		return errSkip{"no -meshkey"}
	}
	m, err := connectPeerWith(ctx, e, "M", key.NewNode(), func(c *derphttp.Client) {
		c.MeshKey = e.meshKey
	})
	if err != nil {
		return err
	}
	defer m.close()
	ps, err := connectPeers(ctx, e, "B", "N1", "N2")
	if err != nil {
		return err
	}
	defer closeAll(ps)
	b, n1, n2 := ps[0], ps[1], ps[2]

	x := &peer{name: "X (forwarded source)", pub: key.NewNode().Public()}
	data := plainPacket(400)
	if err := m.c.ForwardPacket(x.pub, b.pub, data); err != nil {
		return fmt.Errorf("M: forward: %w", err)
	}
	if err := b.expectPacket(ctx, x, data); err != nil {
		return err
	}
	unknown := key.NewNode().Public()
	if err := m.c.ForwardPacket(x.pub, unknown, discoPacket()); err != nil {
		return fmt.Errorf("M: forward: %w", err)
	}
	msg, err := m.next(ctx)
	if err != nil {
		return fmt.Errorf("M: waiting for PeerGone(NotHere) after a forward: %w", err)
	}
	if pg, ok := msg.(derp.PeerGoneMessage); !ok || pg.Peer != unknown ||
		pg.Reason != derp.PeerGoneReasonNotHere {
		return fmt.Errorf("M: got %s, want PeerGone(%s, reason 0x01)", describe(msg),
			unknown.ShortString())
	}
	if err := m.c.ClosePeer(b.pub); err != nil {
		return fmt.Errorf("M: close peer: %w", err)
	}
	if err := b.expectClosed(ctx, "M's ClosePeer"); err != nil {
		return err
	}
	if err := m.expectQuiet(ctx, 200*time.Millisecond); err != nil {
		return err
	}

	// Without the key.
	if err := n1.c.ForwardPacket(x.pub, m.pub, plainPacket(100)); err != nil {
		return fmt.Errorf("N1: forward: %w", err)
	}
	if err := n1.expectClosed(ctx, "a ForwardPacket without the mesh key"); err != nil {
		return err
	}
	if err := n2.c.ClosePeer(m.pub); err != nil {
		return fmt.Errorf("N2: close peer: %w", err)
	}
	if err := n2.expectClosed(ctx, "a ClosePeer without the mesh key"); err != nil {
		return err
	}
	// M, the target of both, is untouched and got nothing.
	return m.expectQuiet(ctx, quiet)
}

// caseKeepAlive: a client that neither sends nor receives must still get a
// KeepAlive frame within 70 s (derper: every 60 s plus up to 5 s of jitter);
// Tailscale clients give up on a connection after 120 s of silence.
func caseKeepAlive(ctx context.Context, e *env) error {
	a, err := connectPeer(ctx, e, "A")
	if err != nil {
		return err
	}
	defer a.close()
	start := time.Now()
	deadline := time.NewTimer(70 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for a.keepalives.Load() == 0 {
		select {
		case m := <-a.msgs:
			if _, ok := m.(derp.KeepAliveMessage); !ok {
				return fmt.Errorf("A: unexpected %s while idle", describe(m))
			}
		case <-a.done:
			return fmt.Errorf("A: connection lost while idle after %v: %w",
				time.Since(start).Round(time.Second), a.err)
		case <-deadline.C:
			return fmt.Errorf("A: no KeepAlive in 70 s")
		case <-tick.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	fmt.Printf("# keepalive: first KeepAlive after %v\n", time.Since(start).Round(time.Second))
	return nil
}
