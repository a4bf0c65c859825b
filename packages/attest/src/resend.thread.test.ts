// The resend, cut-off answer and connection suite again on the addon's other transport: a
// thread per request, which serves where libuv is missing (Bun) and wherever
// MOAT_NATIVE_TRANSPORT=thread asks for it. Each test file runs in its own process.
process.env.MOAT_NATIVE_TRANSPORT = 'thread';
await import('./resend.test.js');
