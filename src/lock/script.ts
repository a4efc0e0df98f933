import { createHash } from 'node:crypto';

/**
 * A Lua script that works on a batch of locks. Each lock contributes `keysPerLock` KEYS and
 * `argsPerLock` ARGV after the script's leading (shared) arguments, so one call serves k locks.
 */
export interface LuaScript {
  readonly name: string;
  readonly lua: string;
  readonly sha: string;
  readonly keysPerLock: number;
  readonly argsPerLock: number;
}

export function defineScript(
  name: string,
  layout: { keysPerLock: number; argsPerLock: number },
  lua: string,
): LuaScript {
  const source = lua.trim();
  return { name, lua: source, sha: createHash('sha1').update(source).digest('hex'), ...layout };
}

/** One lock's part of a batched script call. */
export interface ScriptItem {
  readonly keys: readonly string[];
  readonly args: readonly (string | number)[];
}
