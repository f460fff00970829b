/* zfront-ws.js: the browser client of zfront's WebSocket notifications
 * (docs/protocols/websocket.md). No dependencies; works as a classic
 * script (window.ZfrontSocket) and as a CommonJS module.
 *
 *   const zs = new ZfrontSocket("/ws", {
 *     onEvent: (topic, data, msg) => ...,   // every event
 *     onGap: (topic, msg) => ...,           // missed events are gone: reload
 *     onState: (state) => ...,              // "connecting" | "open" | "closed"
 *   });
 *   zs.subscribe("content/docs");
 *   zs.publish("chat/room", {text: "hi"});  // when the server granted it
 *
 * It reconnects with exponential backoff (with jitter) after any close, and
 * resubscribes each topic with what it saw there: the newest id of each
 * origin (instance) as a list of positions, and the first event it saw
 * there, so the server — this instance or another one of the bus — replays
 * what was missed or sends a gap. An event it already has (a replay racing
 * the live feed) is dropped. */
(function (root) {
  "use strict";

  function absoluteUrl(url) {
    if (/^wss?:\/\//.test(url)) return url;
    var loc = root.location;
    return (loc.protocol === "https:" ? "wss://" : "ws://") + loc.host + url;
  }

  function ZfrontSocket(url, opts) {
    this.url = absoluteUrl(url || "/ws");
    this.opts = opts || {};
    // topic -> Map(origin (hex epoch) -> newest id seen), at most maxOrigins
    // origins (the server's hub.max_origins), most recently seen kept
    this.topics = {};
    this.first = {}; // topic -> the first position seen there (places other origins)
    this.maxOrigins = this.opts.maxOrigins || 16;
    this.minDelay = this.opts.minDelay || 500;
    this.maxDelay = this.opts.maxDelay || 30000;
    this.delay = this.minDelay;
    this.closed = false;
    this.ws = null;
    this._connect();
  }

  ZfrontSocket.prototype._state = function (state) {
    this.state = state;
    if (this.opts.onState) this.opts.onState(state);
  };

  ZfrontSocket.prototype._send = function (msg) {
    if (this.ws && this.ws.readyState === 1) {
      this.ws.send(JSON.stringify(msg));
      return true;
    }
    return false;
  };

  function parsePos(pos) {
    var m = /^([0-9a-f]+)-([0-9]+)$/.exec(pos || "");
    return m ? {origin: m[1], id: Number(m[2])} : null;
  }

  // Notes that pos was seen on topic; false when it was seen already.
  ZfrontSocket.prototype._seen = function (topic, pos) {
    var seen = this.topics[topic], p = parsePos(pos);
    if (!seen || !p) return true;
    if (seen.has(p.origin) && seen.get(p.origin) >= p.id) return false;
    seen.delete(p.origin); // re-inserted last: the most recent
    seen.set(p.origin, p.id);
    if (seen.size > this.maxOrigins) seen.delete(seen.keys().next().value);
    return true;
  };

  ZfrontSocket.prototype._subscribeMsg = function (topic) {
    var msg = {type: "subscribe", topic: topic}, since = [];
    (this.topics[topic] || new Map()).forEach(function (id, origin) {
      since.push(origin + "-" + id);
    });
    if (since.length) msg.since = since;
    if (this.first[topic]) msg.from = this.first[topic];
    return msg;
  };

  ZfrontSocket.prototype._connect = function () {
    var self = this;
    this._state("connecting");
    var ws = new root.WebSocket(this.url, ["zfront.v1"]);
    this.ws = ws;
    ws.onopen = function () {
      self.delay = self.minDelay;
      self._state("open");
      Object.keys(self.topics).forEach(function (t) {
        self._send(self._subscribeMsg(t));
      });
    };
    ws.onmessage = function (m) {
      var msg;
      try {
        msg = JSON.parse(m.data);
      } catch (e) {
        return;
      }
      if (msg.type === "event") {
        if (!self._seen(msg.topic, msg.pos)) return;
        if (msg.topic in self.topics && !self.first[msg.topic]) self.first[msg.topic] = msg.pos;
        if (self.opts.onEvent) self.opts.onEvent(msg.topic, msg.data, msg);
      } else if (msg.type === "gap") {
        // what was missed is gone: continue from what the server has now
        if (msg.topic in self.topics) {
          delete self.first[msg.topic];
          self.topics[msg.topic] = new Map();
          (msg.positions || (msg.last ? [msg.last] : [])).forEach(function (p) {
            self._seen(msg.topic, p);
          });
        }
        if (self.opts.onGap) self.opts.onGap(msg.topic, msg);
      } else if (msg.type === "error") {
        if (self.opts.onError) self.opts.onError(msg);
      }
    };
    ws.onclose = function () {
      self.ws = null;
      self._state("closed");
      if (self.closed) return;
      var wait = self.delay * (0.5 + Math.random() / 2);
      self.delay = Math.min(self.delay * 2, self.maxDelay);
      setTimeout(function () {
        if (!self.closed) self._connect();
      }, wait);
    };
  };

  // since: a position "EPOCH-ID" or a list of them (one per origin) that
  // the page already has, e.g. rendered with the page; optional.
  ZfrontSocket.prototype.subscribe = function (topic, since) {
    if (!(topic in this.topics)) {
      var self = this;
      this.topics[topic] = new Map();
      [].concat(since || []).forEach(function (p) {
        self._seen(topic, p);
      });
    }
    this._send(this._subscribeMsg(topic));
  };

  ZfrontSocket.prototype.unsubscribe = function (topic) {
    delete this.topics[topic];
    delete this.first[topic];
    this._send({type: "unsubscribe", topic: topic});
  };

  ZfrontSocket.prototype.publish = function (topic, data) {
    return this._send({type: "publish", topic: topic, data: data});
  };

  ZfrontSocket.prototype.close = function () {
    this.closed = true;
    if (this.ws) this.ws.close(1000);
  };

  root.ZfrontSocket = ZfrontSocket;
  if (typeof module !== "undefined" && module.exports) module.exports = ZfrontSocket;
})(typeof window !== "undefined" ? window : globalThis);
