// A browser agent over a WebRTC data channel: the fabric's wire protocol in a few hundred lines.
//
// Frames are `u32 header length | u32 payload length | header | payload` (little-endian) on
// the channel's byte stream, cut into messages of at most 16 KiB (docs/webrtc.md); the header
// is the 13-field msgpack array of fabric/wire.py. Only what a page needs is here: HELLO,
// SUB, PUB, requests through a reply inbox, PING/PONG.
"use strict";

const FabricRTC = (() => {
  const CHUNK = 16 * 1024;
  const K = { HELLO: 1, WELCOME: 2, SUB: 3, UNSUB: 4, PUB: 5, MSG: 6, PING: 7, PONG: 8,
              ERR: 9, STATUS: 10, CONTROL: 11 };
  const NO_RESPONDERS_FLAG = 2;
  const ST = { OK: 0, ERROR: 500, NO_RESPONDERS: 503 };

  // -- msgpack: the subset the wire uses (nil, bool, int, float64, str, bin, array, map) --
  const te = new TextEncoder();
  const td = new TextDecoder();

  function pack(value) {
    const out = [];
    const u8 = (b) => out.push(b & 0xff);
    const be = (n, bytes) => { for (let i = bytes - 1; i >= 0; i--) u8(Math.floor(n / 2 ** (8 * i))); };
    const enc = (v) => {
      if (v === null || v === undefined) u8(0xc0);
      else if (v === true) u8(0xc3);
      else if (v === false) u8(0xc2);
      else if (typeof v === "number" && Number.isInteger(v) && v >= 0) {
        if (v < 128) u8(v);
        else if (v < 256) { u8(0xcc); be(v, 1); }
        else if (v < 65536) { u8(0xcd); be(v, 2); }
        else if (v < 2 ** 32) { u8(0xce); be(v, 4); }
        else { u8(0xcf); be(v, 8); }
      } else if (typeof v === "number" && Number.isInteger(v) && v >= -32) u8(v & 0xff);
      else if (typeof v === "number" && Number.isInteger(v) && v >= -(2 ** 31)) {
        u8(0xd2); be(v >>> 0, 4);
      } else if (typeof v === "number") {
        u8(0xcb); const b = new DataView(new ArrayBuffer(8)); b.setFloat64(0, v);
        for (let i = 0; i < 8; i++) u8(b.getUint8(i));
      } else if (typeof v === "string") {
        const s = te.encode(v);
        if (s.length < 32) u8(0xa0 | s.length);
        else if (s.length < 256) { u8(0xd9); be(s.length, 1); }
        else if (s.length < 65536) { u8(0xda); be(s.length, 2); }
        else { u8(0xdb); be(s.length, 4); }
        for (const b of s) u8(b);
      } else if (v instanceof Uint8Array) {
        if (v.length < 256) { u8(0xc4); be(v.length, 1); }
        else if (v.length < 65536) { u8(0xc5); be(v.length, 2); }
        else { u8(0xc6); be(v.length, 4); }
        for (const b of v) u8(b);
      } else if (Array.isArray(v)) {
        if (v.length < 16) u8(0x90 | v.length); else { u8(0xdc); be(v.length, 2); }
        v.forEach(enc);
      } else if (typeof v === "object") {
        const keys = Object.keys(v);
        if (keys.length < 16) u8(0x80 | keys.length); else { u8(0xde); be(keys.length, 2); }
        for (const k of keys) { enc(k); enc(v[k]); }
      } else throw new Error("cannot pack " + typeof v);
    };
    enc(value);
    return new Uint8Array(out);
  }

  function unpack(bytes) {
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    let pos = 0;
    const uint = (n) => { let v = 0; for (let i = 0; i < n; i++) v = v * 256 + bytes[pos++]; return v; };
    const str = (n) => { const s = td.decode(bytes.subarray(pos, pos + n)); pos += n; return s; };
    const bin = (n) => { const b = bytes.slice(pos, pos + n); pos += n; return b; };
    const arr = (n) => { const a = []; for (let i = 0; i < n; i++) a.push(dec()); return a; };
    const map = (n) => { const m = {}; for (let i = 0; i < n; i++) { const k = dec(); m[k] = dec(); } return m; };
    const dec = () => {
      const t = bytes[pos++];
      if (t < 0x80) return t;
      if (t >= 0xe0) return t - 256;
      if ((t & 0xf0) === 0x80) return map(t & 0x0f);
      if ((t & 0xf0) === 0x90) return arr(t & 0x0f);
      if ((t & 0xe0) === 0xa0) return str(t & 0x1f);
      switch (t) {
        case 0xc0: return null;
        case 0xc2: return false;
        case 0xc3: return true;
        case 0xc4: return bin(uint(1));
        case 0xc5: return bin(uint(2));
        case 0xc6: return bin(uint(4));
        case 0xca: { const v = view.getFloat32(pos); pos += 4; return v; }
        case 0xcb: { const v = view.getFloat64(pos); pos += 8; return v; }
        case 0xcc: return uint(1);
        case 0xcd: return uint(2);
        case 0xce: return uint(4);
        case 0xcf: return uint(8);
        case 0xd0: { const v = view.getInt8(pos); pos += 1; return v; }
        case 0xd1: { const v = view.getInt16(pos); pos += 2; return v; }
        case 0xd2: { const v = view.getInt32(pos); pos += 4; return v; }
        case 0xd3: { const v = Number(view.getBigInt64(pos)); pos += 8; return v; }
        case 0xd9: return str(uint(1));
        case 0xda: return str(uint(2));
        case 0xdb: return str(uint(4));
        case 0xdc: return arr(uint(2));
        case 0xdd: return arr(uint(4));
        case 0xde: return map(uint(2));
        case 0xdf: return map(uint(4));
        default: throw new Error("unsupported msgpack type 0x" + t.toString(16));
      }
    };
    return dec();
  }

  // -- frames ------------------------------------------------------------------------------
  function header(kind, f = {}) {
    return pack([1, kind, f.subject || "", f.reply || "", f.msgId || 0, f.timeoutMs || 0, "",
                 f.headers || null, f.sid || 0, f.queue || "", f.status || 0, f.seq || 0,
                 f.flags || 0]);
  }

  function decodeHeader(raw) {
    const h = unpack(raw);
    return { kind: h[1], subject: h[2], reply: h[3], msgId: h[4], headers: h[7] || {},
             sid: h[8], status: h[10], seq: h[11] };
  }

  class Agent {
    constructor(name, { gateway = "", token = "" } = {}) {
      this.name = name;
      this.gateway = gateway;
      this.token = token;
      // The node names the inbox root in WELCOME (only this agent may read below it).
      this.inboxTail = Array.from(crypto.getRandomValues(new Uint8Array(9)),
                                  (b) => b.toString(16).padStart(2, "0")).join("");
      this.inbox = "";
      this.nextId = 1;
      this.nextSid = 1;
      this.subs = new Map();      // sid -> callback(msg)
      this.waiters = new Map();   // reply subject -> {resolve, reject, timer}
      this.buf = new Uint8Array(0);
      this.welcome = null;
      this.onclose = null;
    }

    async connect(timeoutMs = 15000) {
      const pc = new RTCPeerConnection({ iceServers: [] });
      this.pc = pc;
      const dc = pc.createDataChannel("fabric", { ordered: true });
      dc.binaryType = "arraybuffer";
      this.dc = dc;
      dc.onmessage = (ev) => this._received(new Uint8Array(ev.data));
      dc.onclose = () => { this._failAll("link closed"); if (this.onclose) this.onclose(); };
      await pc.setLocalDescription(await pc.createOffer());
      // Candidates travel inside the description: wait until gathering is complete.
      await new Promise((resolve) => {
        if (pc.iceGatheringState === "complete") return resolve();
        pc.addEventListener("icegatheringstatechange", () => {
          if (pc.iceGatheringState === "complete") resolve();
        });
      });
      const h = { "content-type": "application/json" };
      if (this.token) h.authorization = "Bearer " + this.token;
      const resp = await fetch(this.gateway + "/v1/webrtc/offer", {
        method: "POST", headers: h,
        body: JSON.stringify({ sdp: pc.localDescription.sdp, type: "offer" }),
      });
      const body = await resp.json();
      if (!resp.ok) throw new Error(resp.status + " " + body.error.code + ": " + body.error.message);
      await pc.setRemoteDescription(body);
      await new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error("data channel did not open")), timeoutMs);
        dc.onopen = () => { clearTimeout(timer); resolve(); };
        pc.onconnectionstatechange = () => {
          if (pc.connectionState === "failed") { clearTimeout(timer); reject(new Error("WebRTC failed")); }
        };
      });
      const welcomed = new Promise((resolve, reject) => { this._welcomed = { resolve, reject }; });
      const hello = { name: this.name, labels: { via: "browser-webrtc" } };
      if (this.token) hello.credential = this.token;
      this._send(header(K.HELLO, { msgId: this.nextId++ }), pack(hello));
      this.welcome = await welcomed;
      this.inbox = (this.welcome.inbox || "_INBOX") + "." + this.inboxTail;
      this._send(header(K.SUB, { subject: this.inbox + ".>", sid: 0 }));
      const beat = (this.welcome.heartbeat || 2) * 1000;
      this._pinger = setInterval(() => this._send(header(K.PING, { msgId: this.nextId++ })), beat);
      return this;
    }

    close() {
      clearInterval(this._pinger);
      if (this.pc) this.pc.close();
    }

    subscribe(subject, callback, queue = "") {
      const sid = this.nextSid++;
      this.subs.set(sid, callback);
      this._send(header(K.SUB, { subject, sid, queue }));
      return sid;
    }

    publish(subject, data, headers = null, reply = "") {
      this._send(header(K.PUB, { subject, reply, headers, msgId: this.nextId++ }), data);
    }

    request(subject, data, timeoutMs = 5000) {
      const reply = this.inbox + "." + this.nextId;
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          this.waiters.delete(reply);
          reject(new Error("timeout"));
        }, timeoutMs);
        this.waiters.set(reply, { resolve, reject, timer });
        this._send(header(K.PUB, { subject, reply, msgId: this.nextId++, timeoutMs,
                                   flags: NO_RESPONDERS_FLAG }), data);
      });
    }

    // Waits until every frame sent before has been handled by the node (PING round trip).
    flush(timeoutMs = 5000) {
      const id = this.nextId++;
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error("no PONG")), timeoutMs);
        this._pong = { id, resolve: () => { clearTimeout(timer); resolve(); } };
        this._send(header(K.PING, { msgId: id }));
      });
    }

    _send(head, payload = new Uint8Array(0)) {
      if (typeof payload === "string") payload = te.encode(payload);
      const frame = new Uint8Array(8 + head.length + payload.length);
      const dv = new DataView(frame.buffer);
      dv.setUint32(0, head.length, true);
      dv.setUint32(4, payload.length, true);
      frame.set(head, 8);
      frame.set(payload, 8 + head.length);
      for (let i = 0; i < frame.length; i += CHUNK) this.dc.send(frame.subarray(i, i + CHUNK));
    }

    _received(chunk) {
      const joined = new Uint8Array(this.buf.length + chunk.length);
      joined.set(this.buf);
      joined.set(chunk, this.buf.length);
      let pos = 0;
      const dv = new DataView(joined.buffer);
      while (joined.length - pos >= 8) {
        const hl = dv.getUint32(pos, true);
        const pl = dv.getUint32(pos + 4, true);
        if (joined.length - pos - 8 < hl + pl) break;
        const head = decodeHeader(joined.subarray(pos + 8, pos + 8 + hl));
        const payload = joined.slice(pos + 8 + hl, pos + 8 + hl + pl);
        pos += 8 + hl + pl;
        this._frame(head, payload);
      }
      this.buf = joined.slice(pos);
    }

    _frame(h, payload) {
      if (h.kind === K.WELCOME && this._welcomed) {
        this._welcomed.resolve(unpack(payload));
      } else if (h.kind === K.ERR) {
        let err = "error";
        try { err = unpack(payload).join(": "); } catch (e) { /* keep the generic text */ }
        if (this._welcomed && !this.welcome) this._welcomed.reject(new Error(err));
        else this._fail(h.reply || h.subject, err);
      } else if (h.kind === K.PING) {
        this._send(header(K.PONG, { msgId: h.msgId }));
      } else if (h.kind === K.PONG) {
        if (this._pong && this._pong.id === h.msgId) this._pong.resolve();
      } else if (h.kind === K.STATUS && h.status === ST.NO_RESPONDERS) {
        this._fail(h.subject, "no_responders: no agent is subscribed");
      } else if (h.kind === K.MSG) {
        const msg = { subject: h.subject, reply: h.reply, headers: h.headers, data: payload,
                      text: () => td.decode(payload) };
        if (h.sid === 0) {
          const w = this.waiters.get(h.subject);
          if (!w) return;  // a late reply
          if (h.status === ST.ERROR) {
            let err = "remote_error";
            try { err = unpack(payload).join(": "); } catch (e) { /* keep the generic text */ }
            this._fail(h.subject, err);
            return;
          }
          this.waiters.delete(h.subject);
          clearTimeout(w.timer);
          w.resolve(msg);
        } else {
          const cb = this.subs.get(h.sid);
          if (cb) cb(msg);
        }
      }
    }

    _fail(reply, text) {
      const w = this.waiters.get(reply);
      if (!w) return;
      this.waiters.delete(reply);
      clearTimeout(w.timer);
      w.reject(new Error(text));
    }

    _failAll(text) {
      for (const reply of [...this.waiters.keys()]) this._fail(reply, text);
    }
  }

  return { Agent, pack, unpack };
})();
