/** The handler module of `run` and `check`: its default export, as a handler. */
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { ConfigError } from '../errors.ts';
import { assertHydrates, type BaseHandler } from '../handler/base-handler.ts';

/**
 * Imports the module at `modulePath` (relative to `cwd`) and returns its default export as a handler:
 * an instance, or a class instantiated with no arguments. Duck-typed (`hydrate` and `handle`
 * functions): the module may import BaseHandler from another copy of the package.
 */
export async function loadHandler(
  modulePath: string,
  cwd: string = process.cwd(),
): Promise<BaseHandler<unknown>> {
  const absolute = path.resolve(cwd, modulePath);
  const option = `handler module ${JSON.stringify(modulePath)}`;
  let namespace: { default?: unknown };
  try {
    namespace = (await import(pathToFileURL(absolute).href)) as { default?: unknown };
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new ConfigError(option, absolute, `could not be imported (${reason})`, { cause: error });
  }
  const exported = namespace.default;
  if (isHandler(exported)) return hydrating(exported);
  if (typeof exported === 'function' && isHandler(exported.prototype)) {
    let instance: unknown;
    try {
      instance = new (exported as new () => unknown)();
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      throw new ConfigError(
        option,
        exported,
        `default export threw when instantiated with no arguments (${reason})`,
        {
          cause: error,
        },
      );
    }
    if (isHandler(instance)) return hydrating(instance);
    throw new ConfigError(
      option,
      instance,
      'default export must construct a handler with hydrate and handle methods',
    );
  }
  throw new ConfigError(
    option,
    exported,
    'must have a default export that is a BaseHandler subclass or instance (with hydrate and handle methods)',
  );
}

/** Awaits the handler's optional `close()` (a CLI convention: release what the handler opened). */
export async function closeHandler(handler: BaseHandler<unknown>): Promise<void> {
  const close = (handler as { close?: unknown }).close;
  if (typeof close === 'function') await close.call(handler);
}

/** The handler, if it can hydrate as `new Worker` requires (a SchemaHandler needs a schema): `check` sees what `run` would. */
function hydrating(handler: BaseHandler<unknown>): BaseHandler<unknown> {
  assertHydrates(handler);
  return handler;
}

function isHandler(value: unknown): value is BaseHandler<unknown> {
  if (value === null || (typeof value !== 'object' && typeof value !== 'function')) return false;
  const candidate = value as { hydrate?: unknown; handle?: unknown };
  return typeof candidate.hydrate === 'function' && typeof candidate.handle === 'function';
}
