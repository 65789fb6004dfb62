/**
 * How each of herald's event formats changes a live copy (docs/sse.md, "Formats").
 */
import jsonpatch from 'fast-json-patch';

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** A collection item event's data: `<type>.created`, `.updated` or `.deleted`. */
export interface ItemEvent {
  eventType: string;
  resourceType: string;
  resourceId: string;
  resourceDetails?: Json;
  _links?: { href: string; rel: string }[];
}

/** RFC 6902: applies `ops` to `doc` in place where it can, and returns the new document. */
export function applyJsonPatch(doc: Json, ops: jsonpatch.Operation[]): Json {
  return jsonpatch.applyPatch(doc, ops, false, true).newDocument as Json;
}

/** RFC 7396: the merge of `patch` into `target` (`target` is changed in place when it is an object). */
export function applyMergePatch(target: Json | undefined, patch: Json): Json {
  if (patch === null || typeof patch !== 'object' || Array.isArray(patch)) return patch;
  const into: { [key: string]: Json } =
    target !== null && typeof target === 'object' && !Array.isArray(target) ? target : {};
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) delete into[key];
    else into[key] = applyMergePatch(into[key], value);
  }
  return into;
}

/** The value `pointer` (RFC 6901) names in `doc`, or `undefined`. */
export function lookup(doc: Json | undefined, pointer: string): Json | undefined {
  if (pointer === '') return doc;
  let at: Json | undefined = doc;
  for (const raw of pointer.slice(1).split('/')) {
    const key = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    if (Array.isArray(at)) at = at[Number(key)];
    else if (at !== null && typeof at === 'object') at = Object.prototype.hasOwnProperty.call(at, key) ? at[key] : undefined;
    else return undefined;
  }
  return at;
}

/** An id as herald spells it in `resourceId`: strings as they are, other values as JSON. */
export function idString(id: Json | undefined): string | undefined {
  if (id === undefined) return undefined;
  return typeof id === 'string' ? id : JSON.stringify(id);
}

/**
 * A collection's items kept in the upstream's order, found by id: updates stay in place, new
 * items go to the end, deletions close the gap.
 */
export class Items {
  private index: Map<string, number> | undefined;

  constructor(
    private readonly itemsPointer: string,
    private readonly idPointer: string,
  ) {}

  /** The state was replaced: its positions are unknown. */
  reset(): void {
    this.index = undefined;
  }

  /** Applies one item event to `state` (in place) and returns the state. */
  apply(state: Json | undefined, kind: 'created' | 'updated' | 'deleted', id: string, item: Json | undefined): Json {
    const list = lookup(state, this.itemsPointer);
    if (!Array.isArray(list)) throw new Error(`the state has no array at ${JSON.stringify(this.itemsPointer)}`);
    const index = this.positions(list);
    const at = index.get(id);
    if (kind === 'deleted') {
      if (at !== undefined) {
        list.splice(at, 1);
        index.delete(id);
        for (const [key, i] of index) if (i > at) index.set(key, i - 1);
      }
    } else if (item !== undefined) {
      if (at === undefined) {
        index.set(id, list.length);
        list.push(item);
      } else {
        list[at] = item;
      }
    }
    return state as Json;
  }

  private positions(list: Json[]): Map<string, number> {
    if (this.index === undefined) {
      this.index = new Map();
      list.forEach((item, i) => {
        const id = idString(lookup(item, this.idPointer));
        if (id !== undefined) this.index!.set(id, i);
      });
    }
    return this.index;
  }
}
