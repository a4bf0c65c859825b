// The envelope and stamping suite again on the addon's other transport: a thread per
// request, which serves where libuv is missing (Bun) and wherever MOAT_NATIVE_TRANSPORT=thread
// asks for it. Each test file runs in its own process, so the mode is this file's alone.
process.env.MOAT_NATIVE_TRANSPORT = 'thread';
await import('./envelope-append.test.js');
