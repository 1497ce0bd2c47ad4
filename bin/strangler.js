#!/usr/bin/env node
// The `strangler` command. TypeScript sources run through tsx's loader, so there is no build step to forget.
import { register } from 'tsx/esm/api';
register();
await import('../cli/main.ts');
