var __defProp = Object.defineProperty;
var __export = (target, all) => {
  for (var name in all)
    __defProp(target, name, { get: all[name], enumerable: true });
};

// node_modules/fast-json-patch/module/core.mjs
var core_exports = {};
__export(core_exports, {
  JsonPatchError: () => JsonPatchError,
  _areEquals: () => _areEquals,
  applyOperation: () => applyOperation,
  applyPatch: () => applyPatch,
  applyReducer: () => applyReducer,
  deepClone: () => deepClone,
  getValueByPointer: () => getValueByPointer,
  validate: () => validate,
  validator: () => validator
});

// node_modules/fast-json-patch/module/helpers.mjs
/*!
 * https://github.com/Starcounter-Jack/JSON-Patch
 * (c) 2017-2022 Joachim Wester
 * MIT licensed
 */
var __extends = /* @__PURE__ */ (function() {
  var extendStatics = function(d, b) {
    extendStatics = Object.setPrototypeOf || { __proto__: [] } instanceof Array && function(d2, b2) {
      d2.__proto__ = b2;
    } || function(d2, b2) {
      for (var p in b2) if (b2.hasOwnProperty(p)) d2[p] = b2[p];
    };
    return extendStatics(d, b);
  };
  return function(d, b) {
    extendStatics(d, b);
    function __() {
      this.constructor = d;
    }
    d.prototype = b === null ? Object.create(b) : (__.prototype = b.prototype, new __());
  };
})();
var _hasOwnProperty = Object.prototype.hasOwnProperty;
function hasOwnProperty(obj, key) {
  return _hasOwnProperty.call(obj, key);
}
function _objectKeys(obj) {
  if (Array.isArray(obj)) {
    var keys_1 = new Array(obj.length);
    for (var k = 0; k < keys_1.length; k++) {
      keys_1[k] = "" + k;
    }
    return keys_1;
  }
  if (Object.keys) {
    return Object.keys(obj);
  }
  var keys = [];
  for (var i in obj) {
    if (hasOwnProperty(obj, i)) {
      keys.push(i);
    }
  }
  return keys;
}
function _deepClone(obj) {
  switch (typeof obj) {
    case "object":
      return JSON.parse(JSON.stringify(obj));
    //Faster than ES5 clone - http://jsperf.com/deep-cloning-of-objects/5
    case "undefined":
      return null;
    //this is how JSON.stringify behaves for array items
    default:
      return obj;
  }
}
function isInteger(str) {
  var i = 0;
  var len = str.length;
  var charCode;
  while (i < len) {
    charCode = str.charCodeAt(i);
    if (charCode >= 48 && charCode <= 57) {
      i++;
      continue;
    }
    return false;
  }
  return true;
}
function escapePathComponent(path) {
  if (path.indexOf("/") === -1 && path.indexOf("~") === -1)
    return path;
  return path.replace(/~/g, "~0").replace(/\//g, "~1");
}
function unescapePathComponent(path) {
  return path.replace(/~1/g, "/").replace(/~0/g, "~");
}
function hasUndefined(obj) {
  if (obj === void 0) {
    return true;
  }
  if (obj) {
    if (Array.isArray(obj)) {
      for (var i_1 = 0, len = obj.length; i_1 < len; i_1++) {
        if (hasUndefined(obj[i_1])) {
          return true;
        }
      }
    } else if (typeof obj === "object") {
      var objKeys = _objectKeys(obj);
      var objKeysLength = objKeys.length;
      for (var i = 0; i < objKeysLength; i++) {
        if (hasUndefined(obj[objKeys[i]])) {
          return true;
        }
      }
    }
  }
  return false;
}
function patchErrorMessageFormatter(message, args) {
  var messageParts = [message];
  for (var key in args) {
    var value = typeof args[key] === "object" ? JSON.stringify(args[key], null, 2) : args[key];
    if (typeof value !== "undefined") {
      messageParts.push(key + ": " + value);
    }
  }
  return messageParts.join("\n");
}
var PatchError = (
  /** @class */
  (function(_super) {
    __extends(PatchError2, _super);
    function PatchError2(message, name, index, operation, tree) {
      var _newTarget = this.constructor;
      var _this = _super.call(this, patchErrorMessageFormatter(message, { name, index, operation, tree })) || this;
      _this.name = name;
      _this.index = index;
      _this.operation = operation;
      _this.tree = tree;
      Object.setPrototypeOf(_this, _newTarget.prototype);
      _this.message = patchErrorMessageFormatter(message, { name, index, operation, tree });
      return _this;
    }
    return PatchError2;
  })(Error)
);

// node_modules/fast-json-patch/module/core.mjs
var JsonPatchError = PatchError;
var deepClone = _deepClone;
var objOps = {
  add: function(obj, key, document) {
    obj[key] = this.value;
    return { newDocument: document };
  },
  remove: function(obj, key, document) {
    var removed = obj[key];
    delete obj[key];
    return { newDocument: document, removed };
  },
  replace: function(obj, key, document) {
    var removed = obj[key];
    obj[key] = this.value;
    return { newDocument: document, removed };
  },
  move: function(obj, key, document) {
    var removed = getValueByPointer(document, this.path);
    if (removed) {
      removed = _deepClone(removed);
    }
    var originalValue = applyOperation(document, { op: "remove", path: this.from }).removed;
    applyOperation(document, { op: "add", path: this.path, value: originalValue });
    return { newDocument: document, removed };
  },
  copy: function(obj, key, document) {
    var valueToCopy = getValueByPointer(document, this.from);
    applyOperation(document, { op: "add", path: this.path, value: _deepClone(valueToCopy) });
    return { newDocument: document };
  },
  test: function(obj, key, document) {
    return { newDocument: document, test: _areEquals(obj[key], this.value) };
  },
  _get: function(obj, key, document) {
    this.value = obj[key];
    return { newDocument: document };
  }
};
var arrOps = {
  add: function(arr, i, document) {
    if (isInteger(i)) {
      arr.splice(i, 0, this.value);
    } else {
      arr[i] = this.value;
    }
    return { newDocument: document, index: i };
  },
  remove: function(arr, i, document) {
    var removedList = arr.splice(i, 1);
    return { newDocument: document, removed: removedList[0] };
  },
  replace: function(arr, i, document) {
    var removed = arr[i];
    arr[i] = this.value;
    return { newDocument: document, removed };
  },
  move: objOps.move,
  copy: objOps.copy,
  test: objOps.test,
  _get: objOps._get
};
function getValueByPointer(document, pointer) {
  if (pointer == "") {
    return document;
  }
  var getOriginalDestination = { op: "_get", path: pointer };
  applyOperation(document, getOriginalDestination);
  return getOriginalDestination.value;
}
function applyOperation(document, operation, validateOperation, mutateDocument, banPrototypeModifications, index) {
  if (validateOperation === void 0) {
    validateOperation = false;
  }
  if (mutateDocument === void 0) {
    mutateDocument = true;
  }
  if (banPrototypeModifications === void 0) {
    banPrototypeModifications = true;
  }
  if (index === void 0) {
    index = 0;
  }
  if (validateOperation) {
    if (typeof validateOperation == "function") {
      validateOperation(operation, 0, document, operation.path);
    } else {
      validator(operation, 0);
    }
  }
  if (operation.path === "") {
    var returnValue = { newDocument: document };
    if (operation.op === "add") {
      returnValue.newDocument = operation.value;
      return returnValue;
    } else if (operation.op === "replace") {
      returnValue.newDocument = operation.value;
      returnValue.removed = document;
      return returnValue;
    } else if (operation.op === "move" || operation.op === "copy") {
      returnValue.newDocument = getValueByPointer(document, operation.from);
      if (operation.op === "move") {
        returnValue.removed = document;
      }
      return returnValue;
    } else if (operation.op === "test") {
      returnValue.test = _areEquals(document, operation.value);
      if (returnValue.test === false) {
        throw new JsonPatchError("Test operation failed", "TEST_OPERATION_FAILED", index, operation, document);
      }
      returnValue.newDocument = document;
      return returnValue;
    } else if (operation.op === "remove") {
      returnValue.removed = document;
      returnValue.newDocument = null;
      return returnValue;
    } else if (operation.op === "_get") {
      operation.value = document;
      return returnValue;
    } else {
      if (validateOperation) {
        throw new JsonPatchError("Operation `op` property is not one of operations defined in RFC-6902", "OPERATION_OP_INVALID", index, operation, document);
      } else {
        return returnValue;
      }
    }
  } else {
    if (!mutateDocument) {
      document = _deepClone(document);
    }
    var path = operation.path || "";
    var keys = path.split("/");
    var obj = document;
    var t = 1;
    var len = keys.length;
    var existingPathFragment = void 0;
    var key = void 0;
    var validateFunction = void 0;
    if (typeof validateOperation == "function") {
      validateFunction = validateOperation;
    } else {
      validateFunction = validator;
    }
    while (true) {
      key = keys[t];
      if (key && key.indexOf("~") != -1) {
        key = unescapePathComponent(key);
      }
      if (banPrototypeModifications && (key == "__proto__" || key == "prototype" && t > 0 && keys[t - 1] == "constructor")) {
        throw new TypeError("JSON-Patch: modifying `__proto__` or `constructor/prototype` prop is banned for security reasons, if this was on purpose, please set `banPrototypeModifications` flag false and pass it to this function. More info in fast-json-patch README");
      }
      if (validateOperation) {
        if (existingPathFragment === void 0) {
          if (obj[key] === void 0) {
            existingPathFragment = keys.slice(0, t).join("/");
          } else if (t == len - 1) {
            existingPathFragment = operation.path;
          }
          if (existingPathFragment !== void 0) {
            validateFunction(operation, 0, document, existingPathFragment);
          }
        }
      }
      t++;
      if (Array.isArray(obj)) {
        if (key === "-") {
          key = obj.length;
        } else {
          if (validateOperation && !isInteger(key)) {
            throw new JsonPatchError("Expected an unsigned base-10 integer value, making the new referenced value the array element with the zero-based index", "OPERATION_PATH_ILLEGAL_ARRAY_INDEX", index, operation, document);
          } else if (isInteger(key)) {
            key = ~~key;
          }
        }
        if (t >= len) {
          if (validateOperation && operation.op === "add" && key > obj.length) {
            throw new JsonPatchError("The specified index MUST NOT be greater than the number of elements in the array", "OPERATION_VALUE_OUT_OF_BOUNDS", index, operation, document);
          }
          var returnValue = arrOps[operation.op].call(operation, obj, key, document);
          if (returnValue.test === false) {
            throw new JsonPatchError("Test operation failed", "TEST_OPERATION_FAILED", index, operation, document);
          }
          return returnValue;
        }
      } else {
        if (t >= len) {
          var returnValue = objOps[operation.op].call(operation, obj, key, document);
          if (returnValue.test === false) {
            throw new JsonPatchError("Test operation failed", "TEST_OPERATION_FAILED", index, operation, document);
          }
          return returnValue;
        }
      }
      obj = obj[key];
      if (validateOperation && t < len && (!obj || typeof obj !== "object")) {
        throw new JsonPatchError("Cannot perform operation at the desired path", "OPERATION_PATH_UNRESOLVABLE", index, operation, document);
      }
    }
  }
}
function applyPatch(document, patch, validateOperation, mutateDocument, banPrototypeModifications) {
  if (mutateDocument === void 0) {
    mutateDocument = true;
  }
  if (banPrototypeModifications === void 0) {
    banPrototypeModifications = true;
  }
  if (validateOperation) {
    if (!Array.isArray(patch)) {
      throw new JsonPatchError("Patch sequence must be an array", "SEQUENCE_NOT_AN_ARRAY");
    }
  }
  if (!mutateDocument) {
    document = _deepClone(document);
  }
  var results = new Array(patch.length);
  for (var i = 0, length_1 = patch.length; i < length_1; i++) {
    results[i] = applyOperation(document, patch[i], validateOperation, true, banPrototypeModifications, i);
    document = results[i].newDocument;
  }
  results.newDocument = document;
  return results;
}
function applyReducer(document, operation, index) {
  var operationResult = applyOperation(document, operation);
  if (operationResult.test === false) {
    throw new JsonPatchError("Test operation failed", "TEST_OPERATION_FAILED", index, operation, document);
  }
  return operationResult.newDocument;
}
function validator(operation, index, document, existingPathFragment) {
  if (typeof operation !== "object" || operation === null || Array.isArray(operation)) {
    throw new JsonPatchError("Operation is not an object", "OPERATION_NOT_AN_OBJECT", index, operation, document);
  } else if (!objOps[operation.op]) {
    throw new JsonPatchError("Operation `op` property is not one of operations defined in RFC-6902", "OPERATION_OP_INVALID", index, operation, document);
  } else if (typeof operation.path !== "string") {
    throw new JsonPatchError("Operation `path` property is not a string", "OPERATION_PATH_INVALID", index, operation, document);
  } else if (operation.path.indexOf("/") !== 0 && operation.path.length > 0) {
    throw new JsonPatchError('Operation `path` property must start with "/"', "OPERATION_PATH_INVALID", index, operation, document);
  } else if ((operation.op === "move" || operation.op === "copy") && typeof operation.from !== "string") {
    throw new JsonPatchError("Operation `from` property is not present (applicable in `move` and `copy` operations)", "OPERATION_FROM_REQUIRED", index, operation, document);
  } else if ((operation.op === "add" || operation.op === "replace" || operation.op === "test") && operation.value === void 0) {
    throw new JsonPatchError("Operation `value` property is not present (applicable in `add`, `replace` and `test` operations)", "OPERATION_VALUE_REQUIRED", index, operation, document);
  } else if ((operation.op === "add" || operation.op === "replace" || operation.op === "test") && hasUndefined(operation.value)) {
    throw new JsonPatchError("Operation `value` property is not present (applicable in `add`, `replace` and `test` operations)", "OPERATION_VALUE_CANNOT_CONTAIN_UNDEFINED", index, operation, document);
  } else if (document) {
    if (operation.op == "add") {
      var pathLen = operation.path.split("/").length;
      var existingPathLen = existingPathFragment.split("/").length;
      if (pathLen !== existingPathLen + 1 && pathLen !== existingPathLen) {
        throw new JsonPatchError("Cannot perform an `add` operation at the desired path", "OPERATION_PATH_CANNOT_ADD", index, operation, document);
      }
    } else if (operation.op === "replace" || operation.op === "remove" || operation.op === "_get") {
      if (operation.path !== existingPathFragment) {
        throw new JsonPatchError("Cannot perform the operation at a path that does not exist", "OPERATION_PATH_UNRESOLVABLE", index, operation, document);
      }
    } else if (operation.op === "move" || operation.op === "copy") {
      var existingValue = { op: "_get", path: operation.from, value: void 0 };
      var error = validate([existingValue], document);
      if (error && error.name === "OPERATION_PATH_UNRESOLVABLE") {
        throw new JsonPatchError("Cannot perform the operation from a path that does not exist", "OPERATION_FROM_UNRESOLVABLE", index, operation, document);
      }
    }
  }
}
function validate(sequence, document, externalValidator) {
  try {
    if (!Array.isArray(sequence)) {
      throw new JsonPatchError("Patch sequence must be an array", "SEQUENCE_NOT_AN_ARRAY");
    }
    if (document) {
      applyPatch(_deepClone(document), _deepClone(sequence), externalValidator || true);
    } else {
      externalValidator = externalValidator || validator;
      for (var i = 0; i < sequence.length; i++) {
        externalValidator(sequence[i], i, document, void 0);
      }
    }
  } catch (e) {
    if (e instanceof JsonPatchError) {
      return e;
    } else {
      throw e;
    }
  }
}
function _areEquals(a, b) {
  if (a === b)
    return true;
  if (a && b && typeof a == "object" && typeof b == "object") {
    var arrA = Array.isArray(a), arrB = Array.isArray(b), i, length, key;
    if (arrA && arrB) {
      length = a.length;
      if (length != b.length)
        return false;
      for (i = length; i-- !== 0; )
        if (!_areEquals(a[i], b[i]))
          return false;
      return true;
    }
    if (arrA != arrB)
      return false;
    var keys = Object.keys(a);
    length = keys.length;
    if (length !== Object.keys(b).length)
      return false;
    for (i = length; i-- !== 0; )
      if (!b.hasOwnProperty(keys[i]))
        return false;
    for (i = length; i-- !== 0; ) {
      key = keys[i];
      if (!_areEquals(a[key], b[key]))
        return false;
    }
    return true;
  }
  return a !== a && b !== b;
}

// node_modules/fast-json-patch/module/duplex.mjs
var duplex_exports = {};
__export(duplex_exports, {
  compare: () => compare,
  generate: () => generate,
  observe: () => observe,
  unobserve: () => unobserve
});
/*!
 * https://github.com/Starcounter-Jack/JSON-Patch
 * (c) 2017-2021 Joachim Wester
 * MIT license
 */
var beforeDict = /* @__PURE__ */ new WeakMap();
var Mirror = (
  /** @class */
  /* @__PURE__ */ (function() {
    function Mirror2(obj) {
      this.observers = /* @__PURE__ */ new Map();
      this.obj = obj;
    }
    return Mirror2;
  })()
);
var ObserverInfo = (
  /** @class */
  /* @__PURE__ */ (function() {
    function ObserverInfo2(callback, observer) {
      this.callback = callback;
      this.observer = observer;
    }
    return ObserverInfo2;
  })()
);
function getMirror(obj) {
  return beforeDict.get(obj);
}
function getObserverFromMirror(mirror, callback) {
  return mirror.observers.get(callback);
}
function removeObserverFromMirror(mirror, observer) {
  mirror.observers.delete(observer.callback);
}
function unobserve(root, observer) {
  observer.unobserve();
}
function observe(obj, callback) {
  var patches = [];
  var observer;
  var mirror = getMirror(obj);
  if (!mirror) {
    mirror = new Mirror(obj);
    beforeDict.set(obj, mirror);
  } else {
    var observerInfo = getObserverFromMirror(mirror, callback);
    observer = observerInfo && observerInfo.observer;
  }
  if (observer) {
    return observer;
  }
  observer = {};
  mirror.value = _deepClone(obj);
  if (callback) {
    observer.callback = callback;
    observer.next = null;
    var dirtyCheck = function() {
      generate(observer);
    };
    var fastCheck = function() {
      clearTimeout(observer.next);
      observer.next = setTimeout(dirtyCheck);
    };
    if (typeof window !== "undefined") {
      window.addEventListener("mouseup", fastCheck);
      window.addEventListener("keyup", fastCheck);
      window.addEventListener("mousedown", fastCheck);
      window.addEventListener("keydown", fastCheck);
      window.addEventListener("change", fastCheck);
    }
  }
  observer.patches = patches;
  observer.object = obj;
  observer.unobserve = function() {
    generate(observer);
    clearTimeout(observer.next);
    removeObserverFromMirror(mirror, observer);
    if (typeof window !== "undefined") {
      window.removeEventListener("mouseup", fastCheck);
      window.removeEventListener("keyup", fastCheck);
      window.removeEventListener("mousedown", fastCheck);
      window.removeEventListener("keydown", fastCheck);
      window.removeEventListener("change", fastCheck);
    }
  };
  mirror.observers.set(callback, new ObserverInfo(callback, observer));
  return observer;
}
function generate(observer, invertible) {
  if (invertible === void 0) {
    invertible = false;
  }
  var mirror = beforeDict.get(observer.object);
  _generate(mirror.value, observer.object, observer.patches, "", invertible);
  if (observer.patches.length) {
    applyPatch(mirror.value, observer.patches);
  }
  var temp = observer.patches;
  if (temp.length > 0) {
    observer.patches = [];
    if (observer.callback) {
      observer.callback(temp);
    }
  }
  return temp;
}
function _generate(mirror, obj, patches, path, invertible) {
  if (obj === mirror) {
    return;
  }
  if (typeof obj.toJSON === "function") {
    obj = obj.toJSON();
  }
  var newKeys = _objectKeys(obj);
  var oldKeys = _objectKeys(mirror);
  var changed = false;
  var deleted = false;
  for (var t = oldKeys.length - 1; t >= 0; t--) {
    var key = oldKeys[t];
    var oldVal = mirror[key];
    if (hasOwnProperty(obj, key) && !(obj[key] === void 0 && oldVal !== void 0 && Array.isArray(obj) === false)) {
      var newVal = obj[key];
      if (typeof oldVal == "object" && oldVal != null && typeof newVal == "object" && newVal != null && Array.isArray(oldVal) === Array.isArray(newVal)) {
        _generate(oldVal, newVal, patches, path + "/" + escapePathComponent(key), invertible);
      } else {
        if (oldVal !== newVal) {
          changed = true;
          if (invertible) {
            patches.push({ op: "test", path: path + "/" + escapePathComponent(key), value: _deepClone(oldVal) });
          }
          patches.push({ op: "replace", path: path + "/" + escapePathComponent(key), value: _deepClone(newVal) });
        }
      }
    } else if (Array.isArray(mirror) === Array.isArray(obj)) {
      if (invertible) {
        patches.push({ op: "test", path: path + "/" + escapePathComponent(key), value: _deepClone(oldVal) });
      }
      patches.push({ op: "remove", path: path + "/" + escapePathComponent(key) });
      deleted = true;
    } else {
      if (invertible) {
        patches.push({ op: "test", path, value: mirror });
      }
      patches.push({ op: "replace", path, value: obj });
      changed = true;
    }
  }
  if (!deleted && newKeys.length == oldKeys.length) {
    return;
  }
  for (var t = 0; t < newKeys.length; t++) {
    var key = newKeys[t];
    if (!hasOwnProperty(mirror, key) && obj[key] !== void 0) {
      patches.push({ op: "add", path: path + "/" + escapePathComponent(key), value: _deepClone(obj[key]) });
    }
  }
}
function compare(tree1, tree2, invertible) {
  if (invertible === void 0) {
    invertible = false;
  }
  var patches = [];
  _generate(tree1, tree2, patches, "", invertible);
  return patches;
}

// node_modules/fast-json-patch/index.mjs
var fast_json_patch_default = Object.assign({}, core_exports, duplex_exports, {
  JsonPatchError: PatchError,
  deepClone: _deepClone,
  escapePathComponent,
  unescapePathComponent
});

// src/apply.ts
function applyJsonPatch(doc, ops) {
  return fast_json_patch_default.applyPatch(doc, ops, true, true).newDocument;
}
function applyMergePatch(target, patch) {
  if (patch === null || typeof patch !== "object" || Array.isArray(patch)) return patch;
  const into = target !== null && target !== void 0 && typeof target === "object" && !Array.isArray(target) ? target : {};
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) {
      delete into[key];
    } else {
      const now = Object.prototype.hasOwnProperty.call(into, key) ? into[key] : void 0;
      Object.defineProperty(into, key, {
        value: applyMergePatch(now, value),
        writable: true,
        enumerable: true,
        configurable: true
      });
    }
  }
  return into;
}
function lookup(doc, pointer) {
  if (pointer === "") return doc;
  let at = doc;
  for (const raw of pointer.slice(1).split("/")) {
    const key = raw.replace(/~1/g, "/").replace(/~0/g, "~");
    if (Array.isArray(at)) at = at[Number(key)];
    else if (at !== null && typeof at === "object") at = Object.prototype.hasOwnProperty.call(at, key) ? at[key] : void 0;
    else return void 0;
  }
  return at;
}
function idString(id) {
  if (id === void 0) return void 0;
  return typeof id === "string" ? id : JSON.stringify(id);
}
var Items = class {
  constructor(itemsPointer, idPointer) {
    this.itemsPointer = itemsPointer;
    this.idPointer = idPointer;
    /** The indexed positions removed since the index was built, in order. */
    this.holes = [];
  }
  /** The state was replaced: its positions are unknown. */
  reset() {
    this.index = void 0;
    this.holes = [];
  }
  /** The key an item is indexed by: its id as herald spells `resourceId`. */
  key(item) {
    return idString(lookup(item, this.idPointer));
  }
  /** Applies one item event to `state` (in place) and returns the state. */
  apply(state, kind, id, item) {
    const list = lookup(state, this.itemsPointer);
    if (!Array.isArray(list)) throw new Error(`the state has no array at ${JSON.stringify(this.itemsPointer)}`);
    const index = this.positions(list);
    const indexed = index.get(id);
    const at = indexed === void 0 ? void 0 : indexed - below(this.holes, indexed);
    if (kind === "deleted") {
      if (indexed !== void 0 && at !== void 0) {
        list.splice(at, 1);
        index.delete(id);
        this.holes.splice(below(this.holes, indexed), 0, indexed);
        if (this.holes.length > 256) this.reset();
      }
    } else if (item !== void 0) {
      if (at === void 0) {
        index.set(id, list.length + this.holes.length);
        list.push(item);
      } else {
        list[at] = item;
      }
    }
    return state;
  }
  positions(list) {
    if (this.index === void 0) {
      const index = /* @__PURE__ */ new Map();
      list.forEach((item, i) => {
        const id = this.key(item);
        if (id !== void 0) index.set(id, i);
      });
      this.index = index;
      this.holes = [];
    }
    return this.index;
  }
};
function below(holes, at) {
  let [low, high] = [0, holes.length];
  while (low < high) {
    const mid = low + high >> 1;
    if (holes[mid] < at) low = mid + 1;
    else high = mid;
  }
  return low;
}

// src/sse.ts
var SseParser = class {
  constructor(lastEventId) {
    /** The pieces of the line not ended yet. */
    this.pending = [];
    this.event = "";
    this.data = [];
    this.sawCarriageReturn = false;
    this.lastEventId = lastEventId;
  }
  /** Parses `chunk` and returns the frames it completed. */
  push(chunk) {
    const frames = [];
    let start = 0;
    if (this.sawCarriageReturn && chunk.startsWith("\n")) start = 1;
    this.sawCarriageReturn = false;
    for (let i = start; i < chunk.length; i++) {
      const c = chunk.charCodeAt(i);
      if (c !== 10 && c !== 13) continue;
      this.pending.push(chunk.slice(start, i));
      const line = this.pending.length === 1 ? this.pending[0] : this.pending.join("");
      this.pending = [];
      this.line(line, frames);
      if (c === 13) {
        if (i + 1 === chunk.length) this.sawCarriageReturn = true;
        else if (chunk.charCodeAt(i + 1) === 10) i++;
      }
      start = i + 1;
    }
    if (start < chunk.length) this.pending.push(chunk.slice(start));
    return frames;
  }
  line(line, frames) {
    if (line === "") {
      if (this.data.length > 0) {
        frames.push({ event: this.event || "message", data: this.data.join("\n"), id: this.lastEventId });
      }
      this.event = "";
      this.data = [];
      return;
    }
    if (line.startsWith(":")) return;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    switch (field) {
      case "event":
        this.event = value;
        break;
      case "data":
        this.data.push(value);
        break;
      case "id":
        if (!value.includes("\0")) this.lastEventId = value;
        break;
      case "retry":
        if (/^\d+$/.test(value)) this.retry = Number(value);
        break;
    }
  }
};

// src/index.ts
function watch(url, options = {}) {
  return new LiveCopy(url, options);
}
var Refused = class extends Error {
  constructor(end) {
    super(`${end.reason}${end.status ? ` (${end.status})` : ""}`);
    this.end = end;
  }
};
var Retry = class extends Error {
  constructor(message, after) {
    super(message);
    this.after = after;
  }
};
var CannotApply = class extends Error {
};
var SECOND = 1e3;
var MIN_DELAY = 100;
var PROBE_EVERY = 5 * 60 * SECOND;
var LiveCopy = class {
  constructor(url, options) {
    this.options = options;
    this.closed = false;
    /** Streams accepted that sent nothing, in a row, while none ever did (for `auto`). */
    this.silentStreams = 0;
    this.everStreamed = false;
    this.probeAt = 0;
    const base = globalThis.location?.href;
    this.streamUrl = new URL(url, base);
    this.resourceUrl = new URL(this.streamUrl);
    this.resourceUrl.pathname = this.resourceUrl.pathname.replace(/\/event-stream$/, "");
    if (options.lastEventId === void 0 !== (options.state === void 0)) {
      throw new TypeError("watch: lastEventId and state resume together: give both or neither");
    }
    this.fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
    this.items = new Items(options.collection?.items ?? "", options.collection?.id ?? "/id");
    this.lastEventId = options.lastEventId;
    this.state = options.state;
    this.transport = options.transport === "long-poll" ? "long-poll" : "stream";
    this.ended = new Promise((resolve) => this.finish = resolve);
    void this.run();
  }
  close() {
    this.end({ reason: "closed" });
  }
  end(end) {
    if (this.closed) return;
    this.closed = true;
    this.connection?.abort();
    this.wake?.();
    this.finish(end);
    this.call(this.options.onEnd, end);
  }
  /** Calls one of the user's callbacks: what it throws is reported, and the watch goes on. */
  call(callback, ...args) {
    if (callback === void 0) return;
    try {
      callback(...args);
    } catch (e) {
      const report = globalThis.reportError;
      if (report) report(e);
      else console.error("herald client: a callback threw", e);
    }
  }
  async run() {
    let failures = 0;
    const auto = this.options.transport === void 0 || this.options.transport === "auto";
    while (!this.closed) {
      if (auto) this.choose();
      let wait;
      try {
        const outcome = this.transport === "stream" ? await this.stream() : await this.longPoll();
        if (outcome === "again") {
          failures = 0;
          continue;
        }
        failures = outcome === "events" ? 1 : failures + 1;
      } catch (e) {
        if (this.closed) return;
        if (e instanceof Refused) return this.end(e.end);
        failures++;
        if (e instanceof Retry) wait = e.after;
        if (e instanceof CannotApply) this.lastEventId = void 0;
        this.call(this.options.onError, e instanceof Error ? e : new Error(String(e)));
      }
      await this.sleep(wait ?? this.backoff(failures));
    }
  }
  /** `auto`: long polling after two silent streams while none ever worked; a stream again now and then. */
  choose() {
    if (this.transport === "stream" && !this.everStreamed && this.silentStreams >= 2) {
      this.transport = "long-poll";
      this.probeAt = Date.now() + PROBE_EVERY;
    } else if (this.transport === "long-poll" && Date.now() >= this.probeAt) {
      this.transport = "stream";
      this.silentStreams = 1;
      this.probeAt = Date.now() + PROBE_EVERY;
    }
  }
  /** Full jitter over an exponential back-off from the server's `retry:` (or `backoff.min`). */
  backoff(failures) {
    const min = Math.max(MIN_DELAY, this.options.backoff?.min ?? this.retry ?? SECOND);
    const max = Math.max(min, this.options.backoff?.max ?? 30 * SECOND);
    const ceiling = Math.min(max, min * 2 ** Math.min(failures - 1, 16));
    return ceiling / 2 + Math.random() * (ceiling / 2);
  }
  /** Waits `ms`, or less if the watch is closed meanwhile. */
  sleep(ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }
  /** One stream, read to its end. */
  async stream() {
    const headers = { ...this.options.headers, accept: "text/event-stream" };
    if (this.lastEventId) headers["last-event-id"] = this.lastEventId;
    const connection = this.connect();
    let opened = false;
    let timer = setTimeout(() => connection.abort(), this.options.openTimeout ?? 10 * SECOND);
    const idle = () => {
      clearTimeout(timer);
      timer = setTimeout(() => connection.abort(), this.options.idleTimeout ?? 45 * SECOND);
    };
    let accepted = false;
    let events = 0;
    try {
      const res = await this.fetch(this.streamUrl, { headers, signal: connection.signal, cache: "no-store" });
      await refusal(res);
      const type = (res.headers.get("content-type") ?? "").toLowerCase();
      if (!type.startsWith("text/event-stream") || !res.body) {
        throw new Refused({ reason: "not-a-stream", status: res.status, body: await text(res) });
      }
      accepted = true;
      const parser = new SseParser(this.lastEventId);
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      for (; ; ) {
        const { done, value } = await reader.read();
        if (done) break;
        idle();
        if (!opened) {
          opened = true;
          this.everStreamed = true;
          this.silentStreams = 0;
        }
        for (const frame of parser.push(value)) {
          if (this.closed) return "again";
          if (parser.retry !== void 0) this.retry = parser.retry;
          events++;
          const next = await this.handle(frame);
          if (next !== void 0) return next;
        }
      }
    } catch (e) {
      if (e instanceof Refused || e instanceof CannotApply) throw e;
      if (!opened && (accepted || connection.signal.aborted) && !this.closed) this.silentStreams++;
      if (events === 0) throw e;
      this.call(this.options.onError, e instanceof Error ? e : new Error(String(e)));
    } finally {
      clearTimeout(timer);
      connection.abort();
    }
    if (!opened && accepted) this.silentStreams++;
    return events > 0 ? "events" : "nothing";
  }
  /**
   * Applies one frame; an outcome when the stream should end (herald's `error` event), else
   * `undefined`.
   */
  async handle(frame) {
    let data;
    try {
      data = JSON.parse(frame.data);
    } catch {
      data = frame.data;
    }
    const event = { type: frame.event, id: frame.id, data };
    const object = data !== null && typeof data === "object" && !Array.isArray(data) ? data : {};
    let changed = true;
    switch (frame.event) {
      case "upstream-status":
        this.lastEventId = frame.id;
        this.call(this.options.onEvent, event);
        this.call(this.options.onStatus, data);
        return void 0;
      case "error":
        this.call(this.options.onEvent, event);
        if (typeof object.status === "number") throw new Refused({ reason: "refused", status: object.status, body: frame.data });
        return "events";
    }
    try {
      switch (frame.event) {
        case "snapshot":
        case "change":
          this.replace(data);
          break;
        case "patch":
          this.state = applyJsonPatch(this.state, data);
          break;
        case "merge-patch":
          this.state = applyMergePatch(this.state, data);
          break;
        default:
          changed = await this.applyItem(frame.event, object);
      }
    } catch (e) {
      if (e instanceof CannotApply || !(e instanceof Error) || e.name === "AbortError" || e instanceof TypeError) {
        throw e;
      }
      throw new CannotApply(`cannot apply ${frame.event} ${frame.id ?? ""}: ${e.message}`);
    }
    if (this.closed) return "again";
    this.lastEventId = frame.id;
    this.call(this.options.onEvent, event);
    if (changed && this.state !== void 0) this.call(this.options.onState, this.state, event);
    return void 0;
  }
  replace(data) {
    this.state = data;
    this.items.reset();
  }
  /** A collection's `<type>.created/.updated/.deleted`; false for events that are not item events. */
  async applyItem(type, event) {
    const kind = /\.(created|updated|deleted)$/.exec(type)?.[1];
    const id = idString(event.resourceId);
    if (kind === void 0 || id === void 0) return false;
    if (this.state === void 0) throw new CannotApply(`${type} before a snapshot`);
    let item = event.resourceDetails;
    if (item === void 0 && kind !== "deleted") {
      item = await this.readItem(event);
      if (item === void 0) return false;
    }
    const key = (item !== void 0 ? this.items.key(item) : void 0) ?? id;
    this.state = this.items.apply(this.state, kind, key, item);
    return true;
  }
  /** A lean event's item, from its `self` link: only on the watched origin, which the headers are for. */
  async readItem(event) {
    const self = event._links?.find((link) => link.rel === "self")?.href;
    if (self === void 0) throw new CannotApply(`a lean ${event.eventType} without a self link`);
    const url = new URL(self, this.resourceUrl);
    if (url.origin !== this.resourceUrl.origin) {
      throw new CannotApply(`a lean ${event.eventType} links to another origin (${url.origin})`);
    }
    const res = await this.fetch(url, {
      headers: { ...this.options.headers, accept: "application/json" },
      signal: this.connection?.signal
    });
    if (res.status === 404) return void 0;
    await refusal(res);
    return await res.json();
  }
  /** One long poll: `again` when herald answered (a change, or "not modified" after holding it). */
  async longPoll() {
    const wait = Math.min(this.options.wait ?? 60, 120);
    const headers = { ...this.options.headers, accept: "application/json" };
    if (this.etag !== void 0) {
      headers["if-none-match"] = this.etag;
      headers.prefer = `wait=${wait}`;
    }
    const connection = this.connect();
    const timer = setTimeout(() => connection.abort(), (wait + 30) * SECOND);
    try {
      const res = await this.fetch(this.resourceUrl, { headers, signal: connection.signal, cache: "no-store" });
      const held = res.headers.get("preference-applied") !== null;
      if (res.status === 304) {
        await res.body?.cancel();
      } else {
        await refusal(res);
        const body = await text(res);
        const etag = res.headers.get("etag") ?? void 0;
        if (etag === void 0) throw new Refused({ reason: "not-a-stream", status: res.status, body });
        this.etag = etag;
        let data;
        try {
          data = JSON.parse(body);
        } catch {
          data = body;
        }
        if (this.closed) return "again";
        this.replace(data);
        const event = { type: "snapshot", id: void 0, data };
        this.call(this.options.onEvent, event);
        this.call(this.options.onState, this.state, event);
      }
      return held || headers.prefer === void 0 ? "again" : "nothing";
    } finally {
      clearTimeout(timer);
      connection.abort();
    }
  }
  connect() {
    const connection = new AbortController();
    this.connection = connection;
    if (this.closed) connection.abort();
    return connection;
  }
};
async function refusal(res) {
  if (res.ok) return;
  const body = await text(res);
  const after = Number(res.headers.get("retry-after"));
  if (res.status === 408 || res.status === 425 || res.status === 429 || res.status >= 500) {
    throw new Retry(`answered ${res.status}`, Number.isFinite(after) && after > 0 ? Math.min(after, 300) * SECOND : void 0);
  }
  throw new Refused({ reason: "refused", status: res.status, body });
}
async function text(res) {
  try {
    return await res.text();
  } catch {
    return "";
  }
}
export {
  SseParser,
  applyJsonPatch,
  applyMergePatch,
  watch
};
