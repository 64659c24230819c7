/** A real node:http server on 127.0.0.1 (port 0) for tests that stand in for a peer: the handler gets each request's whole body. */
import http from "node:http";
import type { AddressInfo } from "node:net";

export interface LoopbackServer {
  url: string;
  /** closes every connection, streams that hang included */
  close(): Promise<void>;
}

export async function startLoopbackServer(
  handle: (req: http.IncomingMessage, body: Buffer, res: http.ServerResponse) => void | Promise<void>,
): Promise<LoopbackServer> {
  const server = http.createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    await handle(req, Buffer.concat(chunks), res);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: async () => {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}
