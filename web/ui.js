// Small DOM helpers. Text always goes in as text nodes: nothing from the wire is ever parsed
// as HTML.

/** An element with attributes and text content. */
export function el(tag, attrs = {}, text = null) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== null) node.textContent = text;
  return node;
}

/** A stable hue from a name, so a user has the same colour on every screen. */
export function hueOf(name) {
  let h = 2166136261;
  for (let i = 0; i < name.length; i++) {
    h ^= name.charCodeAt(i);
    h = Math.imul(h, 16777619);
  }
  return (h >>> 0) % 360;
}

/** Up to two initials: "alice" → "AL", "bob.smith" → "BS". */
export function initials(name) {
  const parts = name.split(/[._-]+/).filter(Boolean);
  if (parts.length >= 2) return (parts[0][0] + parts[1][0]).toUpperCase();
  return name.slice(0, 2).toUpperCase();
}

/** The avatar: initials on the name's colour, a status dot; greyed when offline. */
export function avatar(name, presence) {
  const a = el('div', { class: `avatar ${presence.toLowerCase()}`, title: `${name}: ${presenceLabel(presence)}` }, initials(name));
  // CSSOM, not a style attribute: the CSP forbids inline styles, not script-set properties.
  a.style.backgroundColor = `hsl(${hueOf(name)} 62% 52%)`;
  return a;
}

export function presenceLabel(p) {
  return { Online: 'Online', Busy: 'Busy', Away: 'Away', Offline: 'Offline' }[p] || p;
}

export function formatTime(ms) {
  const d = new Date(Number(ms));
  const today = new Date().toDateString() === d.toDateString();
  const time = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  return today ? time : `${d.toLocaleDateString()} ${time}`;
}

export async function readFileBytes(file) {
  return new Uint8Array(await file.arrayBuffer());
}
