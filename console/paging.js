// How many items a page of the console asks for: what the reader asked (`?first=N`) when the
// gateway allows it, otherwise the page's own size, never more than the gateway's page limit
// (`me { maxPageSize }`, PHIGATE_MAX_PAGE_SIZE), which the gateway refuses to exceed.
export function pageSize(params, preferred, limit) {
  const asked = Number(params.get('first'));
  return Number.isInteger(asked) && asked >= 1 && asked <= limit ? asked : Math.min(preferred, limit);
}
