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

/**
 * RFC 6902: applies `ops` to `doc` in place where it can, and returns the new document. Each
 * operation is checked before it is applied (a path that is not there, an index out of range):
 * one that fails throws, and the document may keep the operations before it.
 */
export function applyJsonPatch(doc: Json, ops: jsonpatch.Operation[]): Json {
  return jsonpatch.applyPatch(doc, ops, true, true).newDocument as Json;
}

/**
 * RFC 7396: the merge of `patch` into `target` (`target` is changed in place when it is an
 * object). Members are read and written as own properties only, so a patch member named
 * `__proto__` is a member like any other, never the object's prototype.
 */
export function applyMergePatch(target: Json | undefined, patch: Json): Json {
  if (patch === null || typeof patch !== 'object' || Array.isArray(patch)) return patch;
  const into: { [key: string]: Json } =
    target !== null && target !== undefined && typeof target === 'object' && !Array.isArray(target) ? target : {};
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) {
      delete into[key];
    } else {
      const now = Object.prototype.hasOwnProperty.call(into, key) ? into[key] : undefined;
      Object.defineProperty(into, key, {
        value: applyMergePatch(now, value),
        writable: true,
        enumerable: true,
        configurable: true,
      });
    }
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
 * items go to the end, deletions close the gap. Positions are kept as they were when the index
 * was built, with the removed ones since then (`holes`) counted off, so a deletion costs a
 * binary search rather than renumbering every item after it.
 */
export class Items {
  private index: Map<string, number> | undefined;
  /** The indexed positions removed since the index was built, in order. */
  private holes: number[] = [];

  constructor(
    private readonly itemsPointer: string,
    private readonly idPointer: string,
  ) {}

  /** The state was replaced: its positions are unknown. */
  reset(): void {
    this.index = undefined;
    this.holes = [];
  }

  /** The key an item is indexed by: its id as herald spells `resourceId`. */
  key(item: Json | undefined): string | undefined {
    return idString(lookup(item, this.idPointer));
  }

  /** Applies one item event to `state` (in place) and returns the state. */
  apply(state: Json | undefined, kind: 'created' | 'updated' | 'deleted', id: string, item: Json | undefined): Json {
    const list = lookup(state, this.itemsPointer);
    if (!Array.isArray(list)) throw new Error(`the state has no array at ${JSON.stringify(this.itemsPointer)}`);
    const index = this.positions(list);
    const indexed = index.get(id);
    const at = indexed === undefined ? undefined : indexed - below(this.holes, indexed);
    if (kind === 'deleted') {
      if (indexed !== undefined && at !== undefined) {
        list.splice(at, 1);
        index.delete(id);
        this.holes.splice(below(this.holes, indexed), 0, indexed);
        // Rebuilt now and then, so that a lookup stays a short search.
        if (this.holes.length > 256) this.reset();
      }
    } else if (item !== undefined) {
      if (at === undefined) {
        index.set(id, list.length + this.holes.length);
        list.push(item);
      } else {
        list[at] = item;
      }
    }
    return state as Json;
  }

  private positions(list: Json[]): Map<string, number> {
    if (this.index === undefined) {
      const index = new Map<string, number>();
      list.forEach((item, i) => {
        const id = this.key(item);
        if (id !== undefined) index.set(id, i);
      });
      this.index = index;
      this.holes = [];
    }
    return this.index;
  }
}

/** How many of the sorted `holes` are below `at`. */
function below(holes: number[], at: number): number {
  let [low, high] = [0, holes.length];
  while (low < high) {
    const mid = (low + high) >> 1;
    if (holes[mid] < at) low = mid + 1;
    else high = mid;
  }
  return low;
}
