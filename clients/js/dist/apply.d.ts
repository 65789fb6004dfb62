/**
 * How each of herald's event formats changes a live copy (docs/sse.md, "Formats").
 */
import jsonpatch from 'fast-json-patch';
export type Json = null | boolean | number | string | Json[] | {
    [key: string]: Json;
};
/** A collection item event's data: `<type>.created`, `.updated` or `.deleted`. */
export interface ItemEvent {
    eventType: string;
    resourceType: string;
    resourceId: string;
    resourceDetails?: Json;
    _links?: {
        href: string;
        rel: string;
    }[];
}
/**
 * RFC 6902: applies `ops` to `doc` in place where it can, and returns the new document. Each
 * operation is checked before it is applied (a path that is not there, an index out of range):
 * one that fails throws, and the document may keep the operations before it.
 */
export declare function applyJsonPatch(doc: Json, ops: jsonpatch.Operation[]): Json;
/**
 * RFC 7396: the merge of `patch` into `target` (`target` is changed in place when it is an
 * object). Members are read and written as own properties only, so a patch member named
 * `__proto__` is a member like any other, never the object's prototype.
 */
export declare function applyMergePatch(target: Json | undefined, patch: Json): Json;
/** The value `pointer` (RFC 6901) names in `doc`, or `undefined`. */
export declare function lookup(doc: Json | undefined, pointer: string): Json | undefined;
/** An id as herald spells it in `resourceId`: strings as they are, other values as JSON. */
export declare function idString(id: Json | undefined): string | undefined;
/**
 * A collection's items kept in the upstream's order, found by id: updates stay in place, new
 * items go to the end, deletions close the gap. Positions are kept as they were when the index
 * was built, with the removed ones since then (`holes`) counted off, so a deletion costs a
 * binary search rather than renumbering every item after it.
 */
export declare class Items {
    private readonly itemsPointer;
    private readonly idPointer;
    private index;
    /** The indexed positions removed since the index was built, in order. */
    private holes;
    constructor(itemsPointer: string, idPointer: string);
    /** The state was replaced: its positions are unknown. */
    reset(): void;
    /** The key an item is indexed by: its id as herald spells `resourceId`. */
    key(item: Json | undefined): string | undefined;
    /** Applies one item event to `state` (in place) and returns the state. */
    apply(state: Json | undefined, kind: 'created' | 'updated' | 'deleted', id: string, item: Json | undefined): Json;
    private positions;
}
