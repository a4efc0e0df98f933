import { createServer, type Socket } from 'node:net';
import type { SQSClient } from '@aws-sdk/client-sqs';
import type { SqsEnv } from './sqs.ts';

/**
 * A TCP server that accepts connections and never answers: a black-holed connection, as a stuck load
 * balancer or a dropped route gives. Only an abort signal (or the SDK's 900 s socket timeout) ends a
 * request sent there.
 */
export async function startBlackHole(): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (!address || typeof address === 'string') throw new Error('black hole: no port');
  return {
    port: address.port,
    close: () =>
      new Promise((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

export interface FaultySqsOptions {
  /** Sends this call to the black hole (`nth` counts calls of the same command, from 1). */
  hang?: (commandName: string, nth: number) => boolean;
  /** Told when a call is sent to the black hole. */
  onHang?: (commandName: string) => void;
  /** Rewrites a command's input before it is sent (an emulator that ignores a parameter). */
  rewriteInput?: (commandName: string, input: Record<string, unknown>) => Record<string, unknown>;
}

/**
 * A real SDK client on fauxqs whose chosen calls go, through SDK middleware, to a black hole that
 * never answers; the rest reach fauxqs unchanged.
 */
export function faultySqsClient(env: SqsEnv, blackHolePort: number, options: FaultySqsOptions): SQSClient {
  const sqs = env.newClient();
  const calls = new Map<string, number>();
  sqs.middlewareStack.add(
    (next, context) => (args) => {
      const { rewriteInput } = options;
      if (!rewriteInput) return next(args);
      const input = rewriteInput(context.commandName ?? '', { ...(args.input as object) });
      return next({ ...args, input });
    },
    { step: 'initialize', name: 'testRewriteInput' },
  );
  sqs.middlewareStack.add(
    (next, context) => (args) => {
      const command = context.commandName ?? '';
      const nth = (calls.get(command) ?? 0) + 1;
      calls.set(command, nth);
      if (options.hang?.(command, nth)) {
        options.onHang?.(command);
        const request = args.request as { hostname?: string; port?: number };
        request.hostname = '127.0.0.1';
        request.port = blackHolePort;
      }
      return next(args);
    },
    { step: 'build', name: 'testBlackHole' },
  );
  return sqs;
}
