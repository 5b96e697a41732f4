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

/** Up to two initials: "alice" → "AL", "bob.smith" → "BS", "Alice Wang" → "AW", "王小明" → "王小". */
export function initials(name) {
  const parts = name.split(/[\s._-]+/).filter(Boolean);
  // By code point, so an emoji or a character outside the BMP is not cut in half.
  const first = (p) => [...p][0];
  if (parts.length >= 2) return (first(parts[0]) + first(parts[1])).toUpperCase();
  return [...name].slice(0, 2).join('').toUpperCase();
}

/** How a user is shown: "Alice Wang (alice)" with a display name (not unique), else the id. */
export function label(name, card) {
  return card && card.display_name ? `${card.display_name} (${name})` : name;
}

/**
 * The avatar: the user's image when there is one, else the initials (of the display name,
 * if set) on the name's colour; a status dot; greyed when offline.
 */
export function avatar(name, presence, card = null, image = null) {
  const shown = card && card.display_name ? card.display_name : name;
  const a = el('div', { class: `avatar ${presence.toLowerCase()}`, title: `${label(name, card)}: ${presenceLabel(presence)}` },
    image ? null : initials(shown));
  if (image) a.append(el('img', { src: image, alt: '' }));
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
